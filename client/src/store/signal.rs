//! libsignal's store traits, implemented on [`Store`].
//!
//! Records are kept as their libsignal `serialize()` bytes, sealed like every
//! other value. sled gives interior mutability, so the `&mut self` methods
//! only need `&self`. Identities follow trust on first use (see
//! [`Store::note_identity`]): receiving always succeeds and the engine warns;
//! sending to a changed key is refused until the user trusts it.

use async_trait::async_trait;
use libsignal_protocol::{
    CiphertextMessageType, Direction, GenericSignedPreKey, IdentityChange, IdentityKey,
    IdentityKeyPair, IdentityKeyStore, KyberPreKeyId, KyberPreKeyRecord, KyberPreKeyStore,
    PreKeyId, PreKeyRecord, PreKeyStore, ProtocolAddress, ProtocolStore, PublicKey,
    SenderKeyRecord, SenderKeyStore, SessionRecord, SessionStore, SignalProtocolError,
    SignedPreKeyId, SignedPreKeyRecord, SignedPreKeyStore,
};
use uuid::Uuid;

use super::{
    Store, StoreError, TREE_KYBER_BASE_KEYS, TREE_KYBER_LAST_RESORT, TREE_KYBER_PREKEYS,
    TREE_PREKEYS, TREE_SENDER_KEYS, TREE_SESSIONS, TREE_SIGNED_PREKEYS,
};

type SignalResult<T> = std::result::Result<T, SignalProtocolError>;

/// The logical key of an address: `name.device`.
pub(super) fn address_key(address: &ProtocolAddress) -> Vec<u8> {
    format!("{}.{}", address.name(), u32::from(address.device_id())).into_bytes()
}

/// The account behind an address (device ids do not matter for identities).
fn account_of(address: &ProtocolAddress) -> SignalResult<Uuid> {
    Uuid::parse_str(address.name()).map_err(|_| {
        SignalProtocolError::InvalidArgument("protocol address is not an account id".into())
    })
}

/// A store failure handed to libsignal. It carries only the error's
/// `Display` (which is free of secrets) because libsignal requires
/// `UnwindSafe` errors, which `sled::Error` and `io::Error` are not.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct CallbackError(String);

fn callback(method: &'static str) -> impl FnOnce(StoreError) -> SignalProtocolError {
    move |error| {
        SignalProtocolError::for_application_callback(method)(CallbackError(error.to_string()))
    }
}

/// Loads a libsignal record, decoding it with `decode`.
fn load<T>(
    store: &Store,
    method: &'static str,
    tree: &str,
    logical: &[u8],
    decode: impl FnOnce(&[u8]) -> SignalResult<T>,
) -> SignalResult<Option<T>> {
    match store.get_raw(tree, logical).map_err(callback(method))? {
        None => Ok(None),
        Some(bytes) => decode(&bytes).map(Some),
    }
}

fn id_key(id: u32) -> [u8; 4] {
    id.to_be_bytes()
}

#[async_trait(?Send)]
impl IdentityKeyStore for Store {
    async fn get_identity_key_pair(&self) -> SignalResult<IdentityKeyPair> {
        let account = self.account().map_err(callback("get_identity_key_pair"))?;
        IdentityKeyPair::try_from(account.identity_key_pair.as_slice())
    }

    async fn get_local_registration_id(&self) -> SignalResult<u32> {
        let account = self
            .account()
            .map_err(callback("get_local_registration_id"))?;
        Ok(account.registration_id)
    }

    async fn save_identity(
        &mut self,
        address: &ProtocolAddress,
        identity: &IdentityKey,
    ) -> SignalResult<IdentityChange> {
        let peer = account_of(address)?;
        let _guard = self.lock();
        let replaced = self
            .note_identity_locked(peer, identity)
            .map_err(callback("save_identity"))?;
        Ok(IdentityChange::from_changed(replaced))
    }

    async fn is_trusted_identity(
        &self,
        address: &ProtocolAddress,
        identity: &IdentityKey,
        direction: Direction,
    ) -> SignalResult<bool> {
        match direction {
            // Like Signal: accept what arrives, and let the engine warn about
            // the change; refusing would lose the message, not protect it.
            Direction::Receiving => Ok(true),
            // Sending to an unconfirmed new key could deliver to an attacker
            // who took over the account, so only the trusted key passes.
            Direction::Sending => {
                let peer = account_of(address)?;
                match self
                    .identity_status(peer)
                    .map_err(callback("is_trusted_identity"))?
                {
                    None => Ok(true),
                    Some(status) => Ok(status.trusted.as_ref() == Some(identity)),
                }
            }
        }
    }

    async fn get_identity(&self, address: &ProtocolAddress) -> SignalResult<Option<IdentityKey>> {
        let peer = account_of(address)?;
        Ok(self
            .identity_status(peer)
            .map_err(callback("get_identity"))?
            .map(|s| s.current))
    }
}

/// The store seen through one of our earlier identity keys (see
/// `AccountRecord::retired_identities`): libsignal reads our identity key
/// and registration id from it, everything else from the store. A message
/// sealed to a key we had before `identity reset` opens through it.
pub struct AsIdentity {
    store: Store,
    pair: IdentityKeyPair,
    registration_id: u32,
}

impl AsIdentity {
    /// `store`, answering with `pair` and `registration_id` as ours.
    pub fn new(store: Store, pair: IdentityKeyPair, registration_id: u32) -> AsIdentity {
        AsIdentity {
            store,
            pair,
            registration_id,
        }
    }
}

#[async_trait(?Send)]
impl IdentityKeyStore for AsIdentity {
    async fn get_identity_key_pair(&self) -> SignalResult<IdentityKeyPair> {
        Ok(self.pair)
    }

    async fn get_local_registration_id(&self) -> SignalResult<u32> {
        Ok(self.registration_id)
    }

    async fn save_identity(
        &mut self,
        address: &ProtocolAddress,
        identity: &IdentityKey,
    ) -> SignalResult<IdentityChange> {
        self.store.save_identity(address, identity).await
    }

    async fn is_trusted_identity(
        &self,
        address: &ProtocolAddress,
        identity: &IdentityKey,
        direction: Direction,
    ) -> SignalResult<bool> {
        self.store
            .is_trusted_identity(address, identity, direction)
            .await
    }

    async fn get_identity(&self, address: &ProtocolAddress) -> SignalResult<Option<IdentityKey>> {
        self.store.get_identity(address).await
    }
}

#[async_trait(?Send)]
impl PreKeyStore for Store {
    async fn get_pre_key(&self, prekey_id: PreKeyId) -> SignalResult<PreKeyRecord> {
        load(
            self,
            "get_pre_key",
            TREE_PREKEYS,
            &id_key(prekey_id.into()),
            PreKeyRecord::deserialize,
        )?
        .ok_or(SignalProtocolError::InvalidPreKeyId)
    }

    async fn save_pre_key(
        &mut self,
        prekey_id: PreKeyId,
        record: &PreKeyRecord,
    ) -> SignalResult<()> {
        let bytes = record.serialize()?;
        self.put_raw(TREE_PREKEYS, &id_key(prekey_id.into()), &bytes)
            .map_err(callback("save_pre_key"))
    }

    async fn remove_pre_key(&mut self, prekey_id: PreKeyId) -> SignalResult<()> {
        self.remove(TREE_PREKEYS, &id_key(prekey_id.into()))
            .map_err(callback("remove_pre_key"))
    }
}

#[async_trait(?Send)]
impl SignedPreKeyStore for Store {
    async fn get_signed_pre_key(
        &self,
        signed_prekey_id: SignedPreKeyId,
    ) -> SignalResult<SignedPreKeyRecord> {
        load(
            self,
            "get_signed_pre_key",
            TREE_SIGNED_PREKEYS,
            &id_key(signed_prekey_id.into()),
            SignedPreKeyRecord::deserialize,
        )?
        .ok_or(SignalProtocolError::InvalidSignedPreKeyId)
    }

    async fn save_signed_pre_key(
        &mut self,
        signed_prekey_id: SignedPreKeyId,
        record: &SignedPreKeyRecord,
    ) -> SignalResult<()> {
        let bytes = record.serialize()?;
        self.put_raw(
            TREE_SIGNED_PREKEYS,
            &id_key(signed_prekey_id.into()),
            &bytes,
        )
        .map_err(callback("save_signed_pre_key"))
    }
}

#[async_trait(?Send)]
impl KyberPreKeyStore for Store {
    async fn get_kyber_pre_key(
        &self,
        kyber_prekey_id: KyberPreKeyId,
    ) -> SignalResult<KyberPreKeyRecord> {
        load(
            self,
            "get_kyber_pre_key",
            TREE_KYBER_PREKEYS,
            &id_key(kyber_prekey_id.into()),
            KyberPreKeyRecord::deserialize,
        )?
        .ok_or(SignalProtocolError::InvalidKyberPreKeyId)
    }

    async fn save_kyber_pre_key(
        &mut self,
        kyber_prekey_id: KyberPreKeyId,
        record: &KyberPreKeyRecord,
    ) -> SignalResult<()> {
        let bytes = record.serialize()?;
        self.put_raw(TREE_KYBER_PREKEYS, &id_key(kyber_prekey_id.into()), &bytes)
            .map_err(callback("save_kyber_pre_key"))
    }

    async fn mark_kyber_pre_key_used(
        &mut self,
        kyber_prekey_id: KyberPreKeyId,
        ec_prekey_id: SignedPreKeyId,
        base_key: &PublicKey,
    ) -> SignalResult<()> {
        let method = "mark_kyber_pre_key_used";
        let id = id_key(kyber_prekey_id.into());
        let last_resort = self
            .get_raw(TREE_KYBER_LAST_RESORT, &id)
            .map_err(callback(method))?
            .is_some();
        if !last_resort {
            // One-time keys are deleted, so they cannot be used twice.
            return self
                .remove(TREE_KYBER_PREKEYS, &id)
                .map_err(callback(method));
        }
        // A last-resort key stays, so remember each (key, signed prekey, base
        // key) combination: a replayed PreKey message must not start a second
        // session from the same secrets.
        let mut seen = Vec::with_capacity(8 + 33);
        seen.extend_from_slice(&id);
        seen.extend_from_slice(&id_key(ec_prekey_id.into()));
        seen.extend_from_slice(&base_key.serialize());
        let _guard = self.lock();
        if self
            .get_raw(TREE_KYBER_BASE_KEYS, &seen)
            .map_err(callback(method))?
            .is_some()
        {
            return Err(SignalProtocolError::InvalidMessage(
                CiphertextMessageType::PreKey,
                "reused base key",
            ));
        }
        self.put_raw(TREE_KYBER_BASE_KEYS, &seen, &[])
            .map_err(callback(method))
    }
}

#[async_trait(?Send)]
impl SessionStore for Store {
    async fn load_session(&self, address: &ProtocolAddress) -> SignalResult<Option<SessionRecord>> {
        load(
            self,
            "load_session",
            TREE_SESSIONS,
            &address_key(address),
            SessionRecord::deserialize,
        )
    }

    async fn store_session(
        &mut self,
        address: &ProtocolAddress,
        record: &SessionRecord,
    ) -> SignalResult<()> {
        let bytes = record.serialize()?;
        self.put_raw(TREE_SESSIONS, &address_key(address), &bytes)
            .map_err(callback("store_session"))
    }
}

/// Logical key of a sender key: address key, a separator, then the distribution id.
fn sender_key_key(sender: &ProtocolAddress, distribution_id: Uuid) -> Vec<u8> {
    let mut key = address_key(sender);
    key.push(0);
    key.extend_from_slice(distribution_id.as_bytes());
    key
}

#[async_trait(?Send)]
impl SenderKeyStore for Store {
    async fn store_sender_key(
        &mut self,
        sender: &ProtocolAddress,
        distribution_id: Uuid,
        record: &SenderKeyRecord,
    ) -> SignalResult<()> {
        let bytes = record.serialize()?;
        self.put_raw(
            TREE_SENDER_KEYS,
            &sender_key_key(sender, distribution_id),
            &bytes,
        )
        .map_err(callback("store_sender_key"))
    }

    async fn load_sender_key(
        &mut self,
        sender: &ProtocolAddress,
        distribution_id: Uuid,
    ) -> SignalResult<Option<SenderKeyRecord>> {
        load(
            self,
            "load_sender_key",
            TREE_SENDER_KEYS,
            &sender_key_key(sender, distribution_id),
            SenderKeyRecord::deserialize,
        )
    }
}

impl ProtocolStore for Store {}

impl Store {
    /// Writes what a newly registered profile holds (an account record like
    /// `template` but with a fresh identity and account id, `count` one-time
    /// EC and Kyber prekeys, a signed prekey and a Kyber last-resort key), so
    /// that a filler store (`Store::create_filler`) has the trees, record
    /// sizes and file sizes of a profile nobody has used yet.
    pub(crate) fn fill_like_a_new_profile(
        &self,
        template: &super::AccountRecord,
        count: u32,
    ) -> super::Result<()> {
        let failed = |_| StoreError::Corrupt("could not make the filler's keys".into());
        let mut rng = rand::rng();
        let identity = IdentityKeyPair::generate(&mut rng);
        let mut account = template.clone();
        account.account_id = Uuid::new_v4();
        account.identity_key_pair = identity.serialize().to_vec();
        account.registration_id = rand::Rng::random_range(&mut rng, 1..16380);
        account.name = "x".repeat(template.name.len());
        account.sender_certificate = None;
        account.duress_erases_real = false;
        account.duress_decoy_set = false;
        self.set_account(&account)?;
        let private = identity.private_key();
        let first = self.next_ids(super::IdKind::PreKey, count)?;
        for id in first..first + count {
            let pair = libsignal_protocol::KeyPair::generate(&mut rng);
            let bytes = PreKeyRecord::new(id.into(), &pair)
                .serialize()
                .map_err(failed)?;
            self.put_raw(TREE_PREKEYS, &id_key(id), &bytes)?;
        }
        let first = self.next_ids(super::IdKind::KyberPreKey, count + 1)?;
        for id in first..=first + count {
            let record = KyberPreKeyRecord::generate(
                libsignal_protocol::kem::KeyType::Kyber1024,
                id.into(),
                private,
            )
            .map_err(failed)?;
            let bytes = record.serialize().map_err(failed)?;
            self.put_raw(TREE_KYBER_PREKEYS, &id_key(id), &bytes)?;
        }
        self.set_kyber_last_resort((first + count).into())?;
        let id = self.next_ids(super::IdKind::SignedPreKey, 1)?;
        let pair = libsignal_protocol::KeyPair::generate(&mut rng);
        let signature = private
            .calculate_signature(&pair.public_key.serialize(), &mut rng)
            .map_err(|_| StoreError::Corrupt("could not make the filler's keys".into()))?;
        let record = SignedPreKeyRecord::new(
            id.into(),
            libsignal_protocol::Timestamp::from_epoch_millis(template.keys_rotated_at_ms),
            &pair,
            &signature,
        );
        let bytes = record.serialize().map_err(failed)?;
        self.put_raw(TREE_SIGNED_PREKEYS, &id_key(id), &bytes)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::SystemTime;

    use libsignal_protocol::{
        CiphertextMessage, DeviceId, KeyPair, PreKeyBundle, SenderKeyStore, Timestamp,
        create_sender_key_distribution_message, kem, message_decrypt, message_encrypt,
        process_prekey_bundle,
    };

    use super::*;
    use crate::store::{AccountRecord, IdKind};

    const PASS: &str = "test passphrase";

    fn device() -> DeviceId {
        DeviceId::new(1).expect("valid device id")
    }

    /// Creates a profile with an account and returns its address.
    fn create_profile(dir: &Path, name: &str) -> ProtocolAddress {
        let store = Store::create(dir, PASS).expect("create");
        let pair = IdentityKeyPair::generate(&mut rand::rng());
        let account_id = Uuid::new_v4();
        store
            .set_account(&AccountRecord {
                relay: "127.0.0.1:1".into(),
                spki_pin: [0; 32],
                trust_root: Vec::new(),
                account_id,
                device_id: 1,
                name: name.into(),
                identity_key_pair: pair.serialize().to_vec(),
                registration_id: 1234,
                sender_certificate: None,
                transport_hint: None,
                keys_rotated_at_ms: 0,
                duress_erases_real: false,
                duress_decoy_set: false,
                retired_identities: Vec::new(),
                pending_identity: None,
            })
            .expect("set_account");
        ProtocolAddress::new(account_id.to_string(), device())
    }

    /// Generates and stores prekeys the way the engine does; returns the bundle.
    async fn make_bundle(store: &mut Store, last_resort: bool) -> PreKeyBundle {
        let mut rng = rand::rng();
        let identity = store.get_identity_key_pair().await.expect("identity");
        let pre_id = store.next_ids(IdKind::PreKey, 1).expect("id");
        let signed_id = store.next_ids(IdKind::SignedPreKey, 1).expect("id");
        let kyber_id = store.next_ids(IdKind::KyberPreKey, 1).expect("id");

        let pre = KeyPair::generate(&mut rng);
        store
            .save_pre_key(pre_id.into(), &PreKeyRecord::new(pre_id.into(), &pre))
            .await
            .expect("save prekey");
        let signed = KeyPair::generate(&mut rng);
        let signature = identity
            .private_key()
            .calculate_signature(&signed.public_key.serialize(), &mut rng)
            .expect("sign");
        store
            .save_signed_pre_key(
                signed_id.into(),
                &SignedPreKeyRecord::new(
                    signed_id.into(),
                    Timestamp::from_epoch_millis(1),
                    &signed,
                    &signature,
                ),
            )
            .await
            .expect("save signed");
        let kyber = KyberPreKeyRecord::generate(
            kem::KeyType::Kyber1024,
            kyber_id.into(),
            identity.private_key(),
        )
        .expect("kyber");
        store
            .save_kyber_pre_key(kyber_id.into(), &kyber)
            .await
            .expect("save kyber");
        if last_resort {
            store
                .set_kyber_last_resort(kyber_id.into())
                .expect("last resort");
        }
        PreKeyBundle::new(
            store.get_local_registration_id().await.expect("reg id"),
            device(),
            Some((pre_id.into(), pre.public_key)),
            signed_id.into(),
            signed.public_key,
            signature.to_vec(),
            kyber_id.into(),
            kyber.public_key().expect("kyber public"),
            kyber.signature().expect("kyber signature"),
            *identity.identity_key(),
        )
        .expect("bundle")
    }

    async fn encrypt(store: &Store, to: &ProtocolAddress, text: &str) -> CiphertextMessage {
        let (mut sessions, mut identities) = (store.clone(), store.clone());
        message_encrypt(
            text.as_bytes(),
            to,
            &mut sessions,
            &mut identities,
            SystemTime::now(),
            &mut rand::rng(),
        )
        .await
        .expect("encrypt")
    }

    async fn decrypt(
        store: &Store,
        from: &ProtocolAddress,
        message: &CiphertextMessage,
    ) -> SignalResult<Vec<u8>> {
        let (mut sessions, mut identities, mut pre_keys, signed, mut kyber) = (
            store.clone(),
            store.clone(),
            store.clone(),
            store.clone(),
            store.clone(),
        );
        message_decrypt(
            message,
            from,
            &mut sessions,
            &mut identities,
            &mut pre_keys,
            &signed,
            &mut kyber,
            &mut rand::rng(),
        )
        .await
    }

    #[tokio::test]
    async fn full_session_between_two_stores_across_reopens() {
        let alice_dir = tempfile::tempdir().expect("tempdir");
        let bob_dir = tempfile::tempdir().expect("tempdir");
        let alice_addr = create_profile(alice_dir.path(), "alice");
        let bob_addr = create_profile(bob_dir.path(), "bob");

        // Bob publishes a bundle, then closes his profile.
        let bundle = {
            let mut bob = Store::open(bob_dir.path(), PASS).expect("open bob");
            let bundle = make_bundle(&mut bob, false).await;
            bob.flush().await.expect("flush");
            bundle
        };

        // Alice starts a session from it and sends.
        let first = {
            let alice = Store::open(alice_dir.path(), PASS).expect("open alice");
            let (mut sessions, mut identities) = (alice.clone(), alice.clone());
            process_prekey_bundle(
                &bob_addr,
                &mut sessions,
                &mut identities,
                &bundle,
                SystemTime::now(),
                &mut rand::rng(),
            )
            .await
            .expect("process bundle");
            let message = encrypt(&alice, &bob_addr, "hello bob").await;
            assert!(matches!(message, CiphertextMessage::PreKeySignalMessage(_)));
            message
        };

        // Bob, reopened, decrypts; one-time keys are consumed.
        let reply = {
            let bob = Store::open(bob_dir.path(), PASS).expect("reopen bob");
            let plain = decrypt(&bob, &alice_addr, &first).await.expect("decrypt");
            assert_eq!(plain, b"hello bob");
            let pre_id = bundle.pre_key_id().expect("id").expect("has one-time key");
            assert!(matches!(
                bob.get_pre_key(pre_id).await,
                Err(SignalProtocolError::InvalidPreKeyId)
            ));
            let kyber_id = bundle.kyber_pre_key_id().expect("kyber id");
            assert!(matches!(
                bob.get_kyber_pre_key(kyber_id).await,
                Err(SignalProtocolError::InvalidKyberPreKeyId)
            ));
            // Signed prekeys stay.
            assert!(
                bob.get_signed_pre_key(bundle.signed_pre_key_id().expect("id"))
                    .await
                    .is_ok()
            );
            // Alice's key was recorded on first use.
            let alice_peer = Uuid::parse_str(alice_addr.name()).expect("uuid");
            assert!(
                !bob.identity_status(alice_peer)
                    .expect("status")
                    .expect("recorded")
                    .changed()
            );
            // A replay of the same PreKey message fails rather than decrypting twice.
            assert!(decrypt(&bob, &alice_addr, &first).await.is_err());
            encrypt(&bob, &alice_addr, "hi alice").await
        };

        // Alice, reopened, reads the reply and continues on the ratchet.
        let second = {
            let alice = Store::open(alice_dir.path(), PASS).expect("reopen alice");
            assert_eq!(
                decrypt(&alice, &bob_addr, &reply).await.expect("decrypt"),
                b"hi alice"
            );
            let message = encrypt(&alice, &bob_addr, "second").await;
            assert!(matches!(message, CiphertextMessage::SignalMessage(_)));
            message
        };
        let bob = Store::open(bob_dir.path(), PASS).expect("reopen bob");
        assert_eq!(
            decrypt(&bob, &alice_addr, &second).await.expect("decrypt"),
            b"second"
        );

        // Deleting the session makes encryption impossible until a new bundle.
        bob.delete_session(&alice_addr).expect("delete");
        assert!(bob.load_session(&alice_addr).await.expect("load").is_none());
    }

    #[tokio::test]
    async fn last_resort_kyber_key_survives_use_but_not_replay() {
        let dir = tempfile::tempdir().expect("tempdir");
        create_profile(dir.path(), "bob");
        let mut bob = Store::open(dir.path(), PASS).expect("open");
        let one_time = make_bundle(&mut bob, false).await;
        let last_resort = make_bundle(&mut bob, true).await;
        let base = KeyPair::generate(&mut rand::rng()).public_key;
        let signed = last_resort.signed_pre_key_id().expect("id");

        let one_time_id = one_time.kyber_pre_key_id().expect("id");
        bob.mark_kyber_pre_key_used(one_time_id, signed, &base)
            .await
            .expect("mark");
        assert!(bob.get_kyber_pre_key(one_time_id).await.is_err());

        let lr_id = last_resort.kyber_pre_key_id().expect("id");
        bob.mark_kyber_pre_key_used(lr_id, signed, &base)
            .await
            .expect("mark");
        assert!(bob.get_kyber_pre_key(lr_id).await.is_ok());
        // The same base key again is a replay.
        assert!(matches!(
            bob.mark_kyber_pre_key_used(lr_id, signed, &base).await,
            Err(SignalProtocolError::InvalidMessage(_, _))
        ));
        // A fresh base key is fine.
        let other = KeyPair::generate(&mut rand::rng()).public_key;
        bob.mark_kyber_pre_key_used(lr_id, signed, &other)
            .await
            .expect("mark");
    }

    #[tokio::test]
    async fn sender_keys_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let addr = create_profile(dir.path(), "alice");
        let mut store = Store::open(dir.path(), PASS).expect("open");
        let distribution = Uuid::new_v4();
        assert!(
            store
                .load_sender_key(&addr, distribution)
                .await
                .expect("load")
                .is_none()
        );
        create_sender_key_distribution_message(&addr, distribution, &mut store, &mut rand::rng())
            .await
            .expect("create sender key");
        drop(store);
        let mut store = Store::open(dir.path(), PASS).expect("reopen");
        assert!(
            store
                .load_sender_key(&addr, distribution)
                .await
                .expect("load")
                .is_some()
        );
        assert!(
            store
                .load_sender_key(&addr, Uuid::new_v4())
                .await
                .expect("load")
                .is_none()
        );
    }
}
