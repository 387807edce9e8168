//! Rate limits: token buckets keyed by account, device or network address.
//!
//! Each limit allows a burst of `count` and refills at `count` per `period`,
//! so a client that stays under the average is never refused. The state is
//! in memory only: a restart forgets it, which costs an attacker one burst.
//!
//! Addresses are keyed by [`AddrKey`]: a whole IPv4 address, or the /64 of an
//! IPv6 address, because one IPv6 host usually holds a whole /64 and could
//! otherwise step around any per-address limit.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

/// Past this many keys, buckets that have refilled completely are dropped
/// (they hold nothing a fresh bucket would not).
const PRUNE_AT: usize = 4096;

/// A network address as rate limits see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddrKey {
    /// An IPv4 address (or an IPv4-mapped IPv6 one).
    V4([u8; 4]),
    /// The first 64 bits of an IPv6 address.
    V6Prefix([u8; 8]),
}

impl From<IpAddr> for AddrKey {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => AddrKey::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddrKey::V4(v4.octets()),
                None => {
                    let mut prefix = [0u8; 8];
                    prefix.copy_from_slice(&v6.octets()[..8]);
                    AddrKey::V6Prefix(prefix)
                }
            },
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at_ms: u64,
}

/// A token bucket per key.
#[derive(Debug)]
pub struct RateLimiter<K> {
    capacity: f64,
    per_ms: f64,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq + Copy> RateLimiter<K> {
    /// Allows a burst of `count`, refilling `count` per `period`.
    pub fn new(count: u32, period: Duration) -> Self {
        let capacity = f64::from(count.max(1));
        let period_ms = (period.as_millis() as f64).max(1.0);
        Self {
            capacity,
            per_ms: capacity / period_ms,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Allows a burst of `burst`, refilling `per_second` each second.
    pub fn per_second(per_second: u32, burst: u32) -> Self {
        Self {
            capacity: f64::from(burst.max(1)),
            per_ms: f64::from(per_second.max(1)) / 1000.0,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key`, or says how many milliseconds until one is free.
    pub fn take(&self, key: K, now_ms: u64) -> Result<(), u64> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= PRUNE_AT {
            let (capacity, per_ms) = (self.capacity, self.per_ms);
            buckets.retain(|_, b| Self::level(capacity, per_ms, *b, now_ms) < capacity);
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: self.capacity,
            at_ms: now_ms,
        });
        let tokens = Self::level(self.capacity, self.per_ms, *bucket, now_ms);
        if tokens >= 1.0 {
            *bucket = Bucket {
                tokens: tokens - 1.0,
                at_ms: now_ms.max(bucket.at_ms),
            };
            Ok(())
        } else {
            let wait = ((1.0 - tokens) / self.per_ms).ceil();
            Err((wait as u64).max(1))
        }
    }

    fn level(capacity: f64, per_ms: f64, b: Bucket, now_ms: u64) -> f64 {
        // A clock that steps backwards refills nothing rather than panicking.
        let elapsed = now_ms.saturating_sub(b.at_ms) as f64;
        (b.tokens + elapsed * per_ms).min(capacity)
    }

    /// Keys currently tracked (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Says "in N s" for a wait in milliseconds, rounded up.
pub fn retry_text(wait_ms: u64) -> String {
    let secs = wait_ms.div_ceil(1000).max(1);
    if secs < 120 {
        format!("{secs} s")
    } else {
        format!("{} min", secs.div_ceil(60))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_a_steady_refill() {
        let limit = RateLimiter::new(3, Duration::from_secs(3));
        for _ in 0..3 {
            assert_eq!(limit.take(1u8, 1_000), Ok(()));
        }
        let wait = limit.take(1u8, 1_000).expect_err("the burst is spent");
        assert_eq!(wait, 1_000, "one token refills per second");
        // Another key is not affected.
        assert_eq!(limit.take(2u8, 1_000), Ok(()));
        assert!(limit.take(1u8, 1_999).is_err());
        assert_eq!(limit.take(1u8, 2_000), Ok(()));
        assert!(limit.take(1u8, 2_000).is_err());
        // A long pause refills to the burst, not beyond it.
        for _ in 0..3 {
            assert_eq!(limit.take(1u8, 100_000), Ok(()));
        }
        assert!(limit.take(1u8, 100_000).is_err());
    }

    #[test]
    fn per_second_with_a_burst() {
        let limit = RateLimiter::per_second(10, 20);
        for _ in 0..20 {
            assert_eq!(limit.take((), 0), Ok(()));
        }
        assert_eq!(limit.take((), 0), Err(100), "one token per 100 ms");
        assert_eq!(limit.take((), 100), Ok(()));
    }

    #[test]
    fn a_clock_going_backwards_does_not_refill_or_panic() {
        let limit = RateLimiter::new(1, Duration::from_secs(60));
        assert_eq!(limit.take(7u8, 50_000), Ok(()));
        assert!(limit.take(7u8, 10_000).is_err());
    }

    #[test]
    fn full_buckets_are_pruned() {
        let limit = RateLimiter::new(1, Duration::from_secs(1));
        for k in 0..PRUNE_AT as u32 {
            limit.take(k, 0).expect("fresh key");
        }
        assert_eq!(limit.tracked(), PRUNE_AT);
        // Much later every bucket is full again and is dropped.
        limit.take(u32::MAX, 1_000_000).expect("fresh key");
        assert_eq!(limit.tracked(), 1);
    }

    #[test]
    fn ipv6_is_keyed_by_its_64_bit_prefix() {
        let a: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(AddrKey::from(a), AddrKey::from(b));
        assert_ne!(AddrKey::from(a), AddrKey::from(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().expect("ip");
        let v4: IpAddr = "192.0.2.7".parse().expect("ip");
        assert_eq!(AddrKey::from(mapped), AddrKey::from(v4));
    }

    #[test]
    fn retry_text_rounds_up() {
        assert_eq!(retry_text(1), "1 s");
        assert_eq!(retry_text(1_001), "2 s");
        assert_eq!(retry_text(600_000), "10 min");
    }
}
