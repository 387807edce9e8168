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
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BadCode {
    /// Not `sotto-` and 29 letters and digits: a fragment, or not a code at all.
    #[error(
        "not a contact code: expected `sotto-` followed by 29 letters and digits (as printed by \
         `sotto whoami`), got {0}"
    )]
    Length(usize),
    /// A character contact codes never use (they use a-z and 2-7), most
    /// likely misread: 0 for o, 1 for l or i, 8 for b.
    #[error(
        "that contact code has {found:?} in group {group} (`{chunk}`), which contact codes never \
         use (they use the letters a-z and the digits 2-7){hint}; re-check that group"
    )]
    Character {
        /// The character.
        found: char,
        /// Its group of four, counting from 1 after `sotto-`.
        group: usize,
        /// That group as given.
        chunk: String,
        /// A likely intended character, as ", perhaps `o`".
        hint: String,
    },
    /// The right shape, but the check digits do not match: a typo.
    #[error(
        "that contact code has a typo: its check digits do not match{where_}. Compare it \
         with the one the person sees in `sotto whoami`"
    )]
    Checksum {
        /// Where a one-character slip would explain it, as " (re-check group 3, `abcd`)".
        where_: String,
    },
}

impl ContactCode {
    /// Wraps an account id.
    pub fn from_account_id(id: Uuid) -> Self {
        ContactCode(id)
    }

    /// Parses the 16 raw bytes of an account id.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, BadCode> {
        let bytes: [u8; 16] = bytes.try_into().map_err(|_| BadCode::Length(bytes.len()))?;
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
    /// A mistyped code says what is wrong and which group of four to re-check.
    fn from_str(s: &str) -> Result<Self, BadCode> {
        let cleaned: String = s
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .collect::<String>()
            .to_ascii_uppercase();
        let body = cleaned.strip_prefix("SOTTO").unwrap_or(&cleaned);
        if let Some((i, c)) = body.char_indices().find(|(_, c)| !ALPHABET.contains(*c)) {
            let group = i / 4;
            let hint = match c.to_ascii_lowercase() {
                '0' => ", perhaps `o`",
                '1' => ", perhaps `l` or `i`",
                '8' => ", perhaps `b`",
                '9' => ", perhaps `g`",
                _ => "",
            };
            return Err(BadCode::Character {
                found: c.to_ascii_lowercase(),
                group: group + 1,
                chunk: body
                    .chars()
                    .skip(group * 4)
                    .take(4)
                    .collect::<String>()
                    .to_ascii_lowercase(),
                hint: hint.to_string(),
            });
        }
        if body.len() != CODE_CHARS {
            return Err(BadCode::Length(body.len()));
        }
        let code = decode(body).ok_or(BadCode::Length(body.len()))?;
        if let Some(code) = code {
            return Ok(code);
        }
        Err(BadCode::Checksum {
            where_: typo_group(body)
                .map(|g| {
                    format!(
                        " (re-check group {}, `{}`)",
                        g + 1,
                        body[g * 4..(g * 4 + 4).min(body.len())].to_ascii_lowercase()
                    )
                })
                .unwrap_or_default(),
        })
    }
}

/// The characters of a code, as typed after upper-casing.
const ALPHABET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// Base32 characters in a code: 18 bytes (id and checksum).
const CODE_CHARS: usize = 29;

/// The code in `body` (upper-case base32 of [`CODE_CHARS`]), `Some(None)`
/// when its checksum fails, `None` when it does not decode.
fn decode(body: &str) -> Option<Option<ContactCode>> {
    let bytes = BASE32_NOPAD.decode(body.as_bytes()).ok()?;
    let (id, sum) = bytes.split_at_checked(16)?;
    let code = ContactCode::from_bytes(id).ok()?;
    Some((sum == checksum(code.0.as_bytes())).then_some(code))
}

/// The group of four (from 0) where changing one character gives a valid
/// code, if exactly one group does: where the typo most likely is.
fn typo_group(body: &str) -> Option<usize> {
    let mut groups = Vec::new();
    for i in 0..body.len() {
        for c in ALPHABET.chars() {
            if body.as_bytes()[i] == c as u8 {
                continue;
            }
            let mut candidate = body.to_string();
            candidate.replace_range(i..=i, c.encode_utf8(&mut [0; 4]));
            if matches!(decode(&candidate), Some(Some(_))) && !groups.contains(&(i / 4)) {
                groups.push(i / 4);
            }
        }
    }
    match groups.as_slice() {
        [one] => Some(*one),
        _ => None,
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
        assert_eq!("sotto-zzzz".parse::<ContactCode>(), Err(BadCode::Length(4)));
        // One character changed fails the checksum.
        let mut typo = text.clone().into_bytes();
        let last = typo.len() - 3;
        typo[last] = if typo[last] == b'a' { b'b' } else { b'a' };
        let typo = String::from_utf8(typo).expect("ascii");
        assert!(matches!(
            typo.parse::<ContactCode>(),
            Err(BadCode::Checksum { .. })
        ));
    }

    #[test]
    fn a_typo_says_the_checksum_failed_and_where_to_look() {
        let code = ContactCode::from_account_id(Uuid::from_bytes([0x5c; 16])).to_string();
        let groups: Vec<&str> = code.split('-').skip(1).collect();
        let mut shown_a_group = 0;
        for pos in [0, 5, 13, 22] {
            let mut typo: Vec<char> = code["sotto-".len()..].replace('-', "").chars().collect();
            typo[pos] = if typo[pos] == 'q' { 'r' } else { 'q' };
            let typo: String = typo.into_iter().collect();
            let err = typo.parse::<ContactCode>().expect_err("a typo").to_string();
            assert!(
                err.contains("typo") && err.contains("check digits"),
                "{err}"
            );
            assert!(!err.contains("letters and digits"), "{err}");
            // Where one group alone explains it, it is the group with the typo.
            if let Some(at) = err.find("re-check group ") {
                let n: usize = err[at + 15..]
                    .split(|c: char| !c.is_ascii_digit())
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("group number");
                assert_eq!(n, pos / 4 + 1, "{err}");
                assert_ne!(groups[n - 1], &typo[(n - 1) * 4..n * 4], "{err}");
                shown_a_group += 1;
            }
        }
        assert!(
            shown_a_group >= 3,
            "a 16-bit check should locate most slips"
        );
        // A digit codes never use, e.g. 0 read for o.
        let mut parts = groups.clone();
        let third = format!("0{}", &groups[2][1..]);
        parts[2] = &third;
        let zero = format!("sotto-{}", parts.join("-"));
        let err = zero.parse::<ContactCode>().expect_err("0").to_string();
        assert!(
            err.contains("group 3") && err.contains("perhaps `o`"),
            "{err}"
        );
        // A fragment says how long a code is.
        let err = code[..20]
            .parse::<ContactCode>()
            .expect_err("short")
            .to_string();
        assert!(err.contains("29 letters"), "{err}");
    }
}
