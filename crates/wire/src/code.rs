//! Contact codes: how one staffer tells another how to reach them.
//!
//! A code is the account id (16 random bytes, a UUID) plus a 2-byte checksum,
//! in lowercase base32 grouped for reading aloud, e.g. `sotto-abcd-efgh-...`.
//! It names an account on the relay in the invite; it is not secret, and it
//! carries no name. The checksum turns a mistyped code into an error at
//! `contact add` instead of a message sent to nobody (or to someone else).

use data_encoding::BASE32_NOPAD;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// A parsed contact code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContactCode(Uuid);

/// Why a string is not a contact code.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "not a contact code: expected `sotto-` followed by 26 letters and digits (as printed by `sotto whoami`)"
)]
pub struct BadCode;

impl ContactCode {
    /// Wraps an account id.
    pub fn from_account_id(id: Uuid) -> Self {
        ContactCode(id)
    }

    /// Parses the 16 raw bytes of an account id.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, BadCode> {
        let bytes: [u8; 16] = bytes.try_into().map_err(|_| BadCode)?;
        Ok(ContactCode(Uuid::from_bytes(bytes)))
    }

    /// The account id.
    pub fn account_id(&self) -> Uuid {
        self.0
    }

    /// A short, non-identifying prefix for logs (first 4 characters).
    pub fn short(&self) -> String {
        self.to_string()[6..10].to_string()
    }
}

fn checksum(id: &[u8; 16]) -> [u8; 2] {
    let digest = Sha256::new()
        .chain_update(b"sotto-contact-code")
        .chain_update(id)
        .finalize();
    [digest[0], digest[1]]
}

impl std::fmt::Display for ContactCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut bytes = self.0.as_bytes().to_vec();
        bytes.extend_from_slice(&checksum(self.0.as_bytes()));
        let raw = BASE32_NOPAD.encode(&bytes).to_ascii_lowercase();
        f.write_str("sotto")?;
        for chunk in raw.as_bytes().chunks(4) {
            f.write_str("-")?;
            f.write_str(std::str::from_utf8(chunk).map_err(|_| std::fmt::Error)?)?;
        }
        Ok(())
    }
}

impl std::str::FromStr for ContactCode {
    type Err = BadCode;

    /// Lenient: case, spaces and dashes do not matter, and the `sotto` prefix is optional.
    fn from_str(s: &str) -> Result<Self, BadCode> {
        let cleaned: String = s
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .collect::<String>()
            .to_ascii_uppercase();
        let body = cleaned.strip_prefix("SOTTO").unwrap_or(&cleaned);
        let bytes = BASE32_NOPAD.decode(body.as_bytes()).map_err(|_| BadCode)?;
        let (id, sum) = bytes.split_at_checked(16).ok_or(BadCode)?;
        let code = Self::from_bytes(id)?;
        if sum != checksum(code.0.as_bytes()) {
            return Err(BadCode);
        }
        Ok(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_leniently() {
        let code = ContactCode::from_account_id(Uuid::from_bytes([0xab; 16]));
        let text = code.to_string();
        assert!(text.starts_with("sotto-"));
        assert_eq!(text.parse::<ContactCode>(), Ok(code));
        assert_eq!(
            text.to_uppercase().replace('-', " ").parse::<ContactCode>(),
            Ok(code)
        );
        assert_eq!("sotto-zzzz".parse::<ContactCode>(), Err(BadCode));
        // One character changed fails the checksum.
        let mut typo = text.clone().into_bytes();
        let last = typo.len() - 3;
        typo[last] = if typo[last] == b'a' { b'b' } else { b'a' };
        let typo = String::from_utf8(typo).expect("ascii");
        assert_eq!(typo.parse::<ContactCode>(), Err(BadCode));
    }
}
