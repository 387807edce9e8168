//! Group fan-out: one group message to 300 and to 1,000 members.
//!
//! The sender holds real libsignal sessions with every member (built from
//! bundles the relay serves), encrypts once with its sender key, wraps that in
//! multi-recipient sealed sender (v2) and sends one `SendMulti`. Members are
//! connected and authenticated; each waits for the relay's push.
//!
//! Figures: the sender's encrypt time (CPU-bound, one thread), the relay's
//! time to enqueue every copy durably (the `SendMulti` round trip), and the
//! time until the last member holds its copy. Ceiling: libsignal's
//! multi-recipient encrypt alone, for the same recipients.

use std::time::{Duration, Instant};

use libsignal_protocol::{
    CiphertextMessageType, ContentHint, DeviceId, ProtocolAddress, SenderCertificate, ServiceId,
    SessionStore, UnidentifiedSenderMessageContent, create_sender_key_distribution_message,
    group_encrypt, sealed_sender_multi_recipient_encrypt,
};
use sotto_wire::relay::{self, request::Kind as Req, response::Kind as Resp};
use uuid::Uuid;

use crate::common::{Account, Bench, Figure, ms, register, register_many, session_from_relay};

/// Group sizes measured (members besides the sender).
const SIZES: [usize; 2] = [300, 1000];

pub(crate) async fn run(runs: usize) -> anyhow::Result<Vec<Figure>> {
    let mut figures = Vec::new();
    for size in SIZES {
        figures.extend(run_size(size, runs).await?);
    }
    Ok(figures)
}

async fn run_size(size: usize, runs: usize) -> anyhow::Result<Vec<Figure>> {
    let bench = Bench::start(size as u32 + 1)?;
    let mut sender = register(&bench).await?;
    let members = register_many(&bench, size).await?;
    let device = DeviceId::new(1)?;
    let addresses: Vec<ProtocolAddress> = members
        .iter()
        .map(|m| ProtocolAddress::new(m.id.to_string(), device))
        .collect();
    for (m, address) in members.iter().zip(&addresses) {
        session_from_relay(&sender.conn, &mut sender.store, m.id, address).await?;
    }
    let Resp::SenderCertificate(cert) = sender
        .conn
        .request(Req::SenderCertificate(relay::SenderCertificateRequest {}))
        .await?
    else {
        anyhow::bail!("no sender certificate");
    };
    let certificate = SenderCertificate::deserialize(&cert.certificate)?;
    let me = ProtocolAddress::new(sender.id.to_string(), device);
    let distribution_id = Uuid::new_v4();
    create_sender_key_distribution_message(
        &me,
        distribution_id,
        &mut sender.store,
        &mut rand::rng(),
    )
    .await?;
    let payload = vec![0x5a; 1024];

    let mut encrypt_ms = Vec::new();
    let mut enqueue_ms = Vec::new();
    let mut all_received_ms = Vec::new();
    let mut ceiling_ms = Vec::new();
    let members = std::sync::Arc::new(members);
    // One warm-up round, then `runs` measured ones.
    for round in 0..=runs {
        // Ceiling: the multi-recipient encryption alone.
        let content = make_usmc(&mut sender, &me, distribution_id, &certificate, &payload).await?;
        let start = Instant::now();
        encrypt(&mut sender, &addresses, &content).await?;
        let ceiling = start.elapsed();

        // Members wait for their pushes.
        let mut waiters = tokio::task::JoinSet::new();
        for i in 0..members.len() {
            let members = members.clone();
            waiters.spawn(async move {
                let push = members[i].conn.next_push().await;
                (push.is_ok(), Instant::now())
            });
        }
        let start = Instant::now();
        let content = make_usmc(&mut sender, &me, distribution_id, &certificate, &payload).await?;
        let envelope = encrypt(&mut sender, &addresses, &content).await?;
        let encrypted = start.elapsed();
        let sent_at = Instant::now();
        let answer = sender
            .conn
            .request(Req::SendMulti(relay::SendMulti {
                envelope,
                ttl_ms: 0,
            }))
            .await?;
        let enqueued = sent_at.elapsed();
        let Resp::SentMulti(sent) = answer else {
            anyhow::bail!("unexpected answer to SendMulti");
        };
        anyhow::ensure!(
            sent.recipients as usize == size,
            "relay stored {} copies",
            sent.recipients
        );
        let mut last = sent_at;
        let mut got = 0;
        let deadline = tokio::time::sleep(Duration::from_secs(60));
        tokio::pin!(deadline);
        while got < size {
            tokio::select! {
                joined = waiters.join_next() => match joined {
                    Some(Ok((true, at))) => { got += 1; last = last.max(at); }
                    Some(_) => anyhow::bail!("a member's connection failed"),
                    None => break,
                },
                _ = &mut deadline => anyhow::bail!("only {got} of {size} members got the message in 60 s"),
            }
        }
        // Members acknowledge so mailboxes stay small across rounds.
        ack_all(&members).await?;
        if round == 0 {
            continue;
        }
        encrypt_ms.push(ms(encrypted));
        enqueue_ms.push(ms(enqueued));
        all_received_ms.push(ms(last - start));
        ceiling_ms.push(ms(ceiling));
    }
    let s = format!("{size} members");
    Ok(vec![
        Figure::new(
            "fanout",
            &format!("sender encrypt (sender key + SSv2), {s}"),
            "ms",
            encrypt_ms,
            "CPU-bound on one core: one sender-key encryption plus one key agreement per recipient",
        )
        .with_ceiling(
            "libsignal multi-recipient encrypt alone",
            ceiling_ms.clone(),
        ),
        Figure::new(
            "fanout",
            &format!("relay enqueue, durable, {s}"),
            "ms",
            enqueue_ms,
            "SendMulti round trip: parse, check every recipient, one sled transaction, fsync (target: 1,000 members < 25 ms)",
        ),
        Figure::new(
            "fanout",
            &format!("send start to last member's push, {s}"),
            "ms",
            all_received_ms,
            "encrypt + enqueue + pushes to every connected member over loopback",
        )
        .with_ceiling("libsignal multi-recipient encrypt alone", ceiling_ms),
    ])
}

async fn make_usmc(
    sender: &mut Account,
    me: &ProtocolAddress,
    distribution_id: Uuid,
    certificate: &SenderCertificate,
    payload: &[u8],
) -> anyhow::Result<UnidentifiedSenderMessageContent> {
    let message = group_encrypt(
        &mut sender.store,
        me,
        distribution_id,
        payload,
        &mut rand::rng(),
    )
    .await?;
    Ok(UnidentifiedSenderMessageContent::new(
        CiphertextMessageType::SenderKey,
        certificate.clone(),
        message.serialized().to_vec(),
        ContentHint::Default,
        Some(vec![1; 16]),
    )?)
}

async fn encrypt(
    sender: &mut Account,
    addresses: &[ProtocolAddress],
    usmc: &UnidentifiedSenderMessageContent,
) -> anyhow::Result<Vec<u8>> {
    let mut sessions = Vec::with_capacity(addresses.len());
    for a in addresses {
        sessions.push(
            sender
                .store
                .load_session(a)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no session"))?,
        );
    }
    Ok(sealed_sender_multi_recipient_encrypt(
        &addresses.iter().collect::<Vec<_>>(),
        &sessions.iter().collect::<Vec<_>>(),
        std::iter::empty::<ServiceId>(),
        usmc,
        &sender.store.identity_store,
        &mut rand::rng(),
    )
    .await?)
}

async fn ack_all(members: &[Account]) -> anyhow::Result<()> {
    for m in members {
        let Resp::Envelopes(batch) = m
            .conn
            .request(Req::Fetch(relay::Fetch { limit: 100 }))
            .await?
        else {
            anyhow::bail!("unexpected answer to fetch");
        };
        let seqs: Vec<u64> = batch.envelopes.iter().map(|e| e.seq).collect();
        if !seqs.is_empty() {
            m.conn.request(Req::Ack(relay::Ack { seqs })).await?;
        }
    }
    Ok(())
}
