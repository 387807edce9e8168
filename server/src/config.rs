//! The relay's configuration: `DIR/config.toml`, overridden by `SOTTO_RELAY_<KEY>` env vars.
//!
//! A serde [`RawConfig`] (all optional strings and numbers, unknown keys refused)
//! is converted into a validated [`Config`] whose types rule out bad values, so
//! the rest of the relay never re-checks them.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

/// Why a configuration is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The TOML does not parse or has an unknown key.
    #[error("config.toml is not valid: {0}")]
    Parse(String),
    /// A key has a value we cannot use.
    #[error("config key `{key}` is invalid: {why}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// What is wrong, and what a valid value looks like.
        why: String,
    },
}

/// How logs are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// UDP address to bind.
    pub listen: SocketAddr,
    /// `host:port` clients should dial (goes into invite links); `None` means the bound address.
    pub public_addr: Option<String>,
    /// Cap on one request frame.
    pub max_frame_bytes: usize,
    /// Cap on one sealed envelope.
    pub max_envelope_bytes: usize,
    /// Most envelopes one mailbox holds.
    pub mailbox_max_envelopes: u64,
    /// Most envelope bytes one mailbox holds.
    pub mailbox_max_bytes: u64,
    /// Undelivered envelopes older than this are deleted.
    pub envelope_ttl: Duration,
    /// How often the expiry sweep runs.
    pub sweep_interval: Duration,
    /// `PreKeyCount.low` is set when either count is below this.
    pub prekey_low_water: u32,
    /// Lifetime of issued sender certificates.
    pub sender_certificate_ttl: Duration,
    /// Most simultaneous signed-in (authenticated) connections.
    pub max_connections: usize,
    /// Most simultaneous connections that have not signed in (handshakes
    /// included): a budget apart from `max_connections`, so strangers cannot
    /// use up members' slots. At the cap, a new connection closes the oldest
    /// unauthenticated one (see `net::UnauthPool`).
    pub unauthenticated_connections: usize,
    /// Most unauthenticated connections from one address; past it, a new one
    /// from that address closes that address's oldest.
    pub unauthenticated_connections_per_address: usize,
    /// An unauthenticated connection with no request in progress for this
    /// long is closed (group requests may use one; clients reconnect).
    pub unauthenticated_idle: Duration,
    /// Bytes of request frames being read on unauthenticated connections, in
    /// all; past it such frames are refused (`UNAVAILABLE`, retry shortly).
    pub unauthenticated_buffer_bytes: usize,
    /// Cap on one group's stored state (its encrypted blob).
    pub max_group_state_bytes: usize,
    /// Most groups the relay stores.
    pub max_groups: u64,
    /// Cap on one join request.
    pub max_join_request_bytes: usize,
    /// Most pending join requests per group.
    pub max_join_requests_per_group: u64,
    /// Most simultaneous signed-in connections from one address (IPv4, or IPv6 /64).
    pub connections_per_address: usize,
    /// Registrations one address may make per hour (burst and hourly refill).
    pub registrations_per_address_per_hour: u32,
    /// Send requests (1:1 or group) one account may make per minute.
    pub sends_per_minute: u32,
    /// Prekey bundles one account may fetch per hour.
    pub bundle_fetches_per_hour: u32,
    /// One-time prekeys handed out per device per hour; past it, bundles
    /// carry only the signed and last-resort keys.
    pub one_time_keys_per_hour: u32,
    /// New connections (handshakes) accepted per second from all addresses;
    /// the burst is five seconds' worth. Past it, handshakes are refused
    /// before any cryptography is done.
    pub handshakes_per_second: u32,
    /// New connections per second from one address (burst: ten seconds' worth).
    pub handshakes_per_address_per_second: u32,
    /// Free disk space kept in reserve: below it, writes that grow the
    /// database are refused (see `disk.rs`).
    pub min_free_disk_bytes: u64,
    /// Loopback address for the Prometheus text metrics endpoint; `None` is off.
    pub metrics_listen: Option<SocketAddr>,
    /// Operator-supplied TLS certificate chain (PEM); `None` uses the self-signed one.
    pub tls_cert: Option<std::path::PathBuf>,
    /// The private key (PEM) for `tls_cert`.
    pub tls_key: Option<std::path::PathBuf>,
    /// Log format.
    pub log_format: LogFormat,
}

/// Default listen address: loopback, so a laptop test run is not exposed.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:4433";

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN
                .parse()
                .expect("DEFAULT_LISTEN is a valid socket address literal"),
            public_addr: None,
            max_frame_bytes: sotto_wire::DEFAULT_MAX_FRAME_BYTES,
            max_envelope_bytes: 64 * 1024,
            mailbox_max_envelopes: 10_000,
            mailbox_max_bytes: 64 * 1024 * 1024,
            envelope_ttl: Duration::from_secs(30 * 86_400),
            sweep_interval: Duration::from_secs(5 * 60),
            prekey_low_water: 20,
            sender_certificate_ttl: Duration::from_secs(86_400),
            max_connections: 1000,
            unauthenticated_connections: 256,
            unauthenticated_connections_per_address: 32,
            unauthenticated_idle: Duration::from_secs(10),
            unauthenticated_buffer_bytes: 8 * 1024 * 1024,
            max_group_state_bytes: 264 * 1024,
            max_groups: 100_000,
            max_join_request_bytes: 8 * 1024,
            max_join_requests_per_group: 64,
            // Generous: a parliament's or an office's staff often share one
            // NAT address, and must not lock each other out.
            connections_per_address: 200,
            registrations_per_address_per_hour: 60,
            // Per request; an admin changing a 600-member group sends an
            // update to each member one by one.
            sends_per_minute: 3000,
            bundle_fetches_per_hour: 1000,
            one_time_keys_per_hour: 20,
            min_free_disk_bytes: 64 * 1024 * 1024,
            handshakes_per_second: 200,
            handshakes_per_address_per_second: 20,
            metrics_listen: None,
            tls_cert: None,
            tls_key: None,
            log_format: LogFormat::Human,
        }
    }
}

/// The file as written: every key optional, unknown keys an error.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    listen: Option<String>,
    public_addr: Option<String>,
    max_frame_bytes: Option<u64>,
    max_envelope_bytes: Option<u64>,
    mailbox_max_envelopes: Option<u64>,
    mailbox_max_bytes: Option<u64>,
    envelope_ttl: Option<String>,
    sweep_interval: Option<String>,
    prekey_low_water: Option<u32>,
    sender_certificate_ttl: Option<String>,
    max_connections: Option<u64>,
    unauthenticated_connections: Option<u64>,
    unauthenticated_connections_per_address: Option<u64>,
    unauthenticated_idle: Option<String>,
    unauthenticated_buffer_bytes: Option<u64>,
    max_group_state_bytes: Option<u64>,
    max_groups: Option<u64>,
    max_join_request_bytes: Option<u64>,
    max_join_requests_per_group: Option<u64>,
    connections_per_address: Option<u64>,
    registrations_per_address_per_hour: Option<u64>,
    sends_per_minute: Option<u64>,
    bundle_fetches_per_hour: Option<u64>,
    one_time_keys_per_hour: Option<u64>,
    min_free_disk_bytes: Option<u64>,
    handshakes_per_second: Option<u64>,
    handshakes_per_address_per_second: Option<u64>,
    metrics_listen: Option<String>,
    tls_cert: Option<String>,
    tls_key: Option<String>,
    log_format: Option<String>,
}

const KEYS: &[&str] = &[
    "listen",
    "public_addr",
    "max_frame_bytes",
    "max_envelope_bytes",
    "mailbox_max_envelopes",
    "mailbox_max_bytes",
    "envelope_ttl",
    "sweep_interval",
    "prekey_low_water",
    "sender_certificate_ttl",
    "max_connections",
    "unauthenticated_connections",
    "unauthenticated_connections_per_address",
    "unauthenticated_idle",
    "unauthenticated_buffer_bytes",
    "max_group_state_bytes",
    "max_groups",
    "max_join_request_bytes",
    "max_join_requests_per_group",
    "connections_per_address",
    "registrations_per_address_per_hour",
    "sends_per_minute",
    "bundle_fetches_per_hour",
    "one_time_keys_per_hour",
    "min_free_disk_bytes",
    "handshakes_per_second",
    "handshakes_per_address_per_second",
    "metrics_listen",
    "tls_cert",
    "tls_key",
    "log_format",
];

impl RawConfig {
    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse(e.message().to_string()))
    }

    /// Applies `SOTTO_RELAY_<KEY>` overrides from `env` (a lookup, so tests need not touch the process env).
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        for key in KEYS {
            let Some(value) = env(&format!("SOTTO_RELAY_{}", key.to_uppercase())) else {
                continue;
            };
            let num = |v: &str| -> Result<u64, ConfigError> {
                v.trim().parse().map_err(|_| ConfigError::Invalid {
                    key,
                    why: "expected a whole number".into(),
                })
            };
            match *key {
                "listen" => self.listen = Some(value),
                "public_addr" => self.public_addr = Some(value),
                "max_frame_bytes" => self.max_frame_bytes = Some(num(&value)?),
                "max_envelope_bytes" => self.max_envelope_bytes = Some(num(&value)?),
                "mailbox_max_envelopes" => self.mailbox_max_envelopes = Some(num(&value)?),
                "mailbox_max_bytes" => self.mailbox_max_bytes = Some(num(&value)?),
                "envelope_ttl" => self.envelope_ttl = Some(value),
                "sweep_interval" => self.sweep_interval = Some(value),
                "prekey_low_water" => {
                    self.prekey_low_water =
                        Some(
                            u32::try_from(num(&value)?).map_err(|_| ConfigError::Invalid {
                                key,
                                why: "too large".into(),
                            })?,
                        )
                }
                "sender_certificate_ttl" => self.sender_certificate_ttl = Some(value),
                "max_connections" => self.max_connections = Some(num(&value)?),
                "unauthenticated_connections" => {
                    self.unauthenticated_connections = Some(num(&value)?)
                }
                "unauthenticated_connections_per_address" => {
                    self.unauthenticated_connections_per_address = Some(num(&value)?)
                }
                "unauthenticated_idle" => self.unauthenticated_idle = Some(value),
                "unauthenticated_buffer_bytes" => {
                    self.unauthenticated_buffer_bytes = Some(num(&value)?)
                }
                "max_group_state_bytes" => self.max_group_state_bytes = Some(num(&value)?),
                "max_groups" => self.max_groups = Some(num(&value)?),
                "max_join_request_bytes" => self.max_join_request_bytes = Some(num(&value)?),
                "max_join_requests_per_group" => {
                    self.max_join_requests_per_group = Some(num(&value)?)
                }
                "connections_per_address" => self.connections_per_address = Some(num(&value)?),
                "registrations_per_address_per_hour" => {
                    self.registrations_per_address_per_hour = Some(num(&value)?)
                }
                "sends_per_minute" => self.sends_per_minute = Some(num(&value)?),
                "bundle_fetches_per_hour" => self.bundle_fetches_per_hour = Some(num(&value)?),
                "one_time_keys_per_hour" => self.one_time_keys_per_hour = Some(num(&value)?),
                "min_free_disk_bytes" => self.min_free_disk_bytes = Some(num(&value)?),
                "handshakes_per_second" => self.handshakes_per_second = Some(num(&value)?),
                "handshakes_per_address_per_second" => {
                    self.handshakes_per_address_per_second = Some(num(&value)?)
                }
                "metrics_listen" => self.metrics_listen = Some(value),
                "tls_cert" => self.tls_cert = Some(value),
                "tls_key" => self.tls_key = Some(value),
                "log_format" => self.log_format = Some(value),
                _ => {}
            }
        }
        Ok(())
    }

    /// Validates into a [`Config`], filling defaults.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let d = Config::default();
        let positive = |key: &'static str, v: Option<u64>, def: u64| -> Result<u64, ConfigError> {
            match v {
                None => Ok(def),
                Some(0) => Err(ConfigError::Invalid {
                    key,
                    why: "must be greater than zero".into(),
                }),
                Some(n) => Ok(n),
            }
        };
        let duration = |key: &'static str, v: Option<String>, def: Duration| match v {
            None => Ok(def),
            Some(s) => parse_duration(&s).map_err(|why| ConfigError::Invalid { key, why }),
        };
        let listen = match self.listen {
            None => d.listen,
            Some(s) => s.trim().parse().map_err(|_| ConfigError::Invalid {
                key: "listen",
                why: format!("expected IP:PORT such as {DEFAULT_LISTEN} or 0.0.0.0:4433"),
            })?,
        };
        let public_addr = match self.public_addr.map(|s| s.trim().to_string()) {
            None => None,
            Some(s) if s.is_empty() => None,
            Some(s) => {
                check_host_port(&s).map_err(|why| ConfigError::Invalid {
                    key: "public_addr",
                    why,
                })?;
                Some(s)
            }
        };
        let max_frame_bytes = positive(
            "max_frame_bytes",
            self.max_frame_bytes,
            d.max_frame_bytes as u64,
        )?;
        let max_envelope_bytes = positive(
            "max_envelope_bytes",
            self.max_envelope_bytes,
            d.max_envelope_bytes as u64,
        )?;
        if max_envelope_bytes >= max_frame_bytes {
            return Err(ConfigError::Invalid {
                key: "max_envelope_bytes",
                why: "must be smaller than max_frame_bytes".into(),
            });
        }
        // Both travel inside one request frame, with signatures and keys beside them.
        let max_group_state_bytes = positive(
            "max_group_state_bytes",
            self.max_group_state_bytes,
            d.max_group_state_bytes as u64,
        )?;
        if max_group_state_bytes >= max_frame_bytes {
            return Err(ConfigError::Invalid {
                key: "max_group_state_bytes",
                why: "must be smaller than max_frame_bytes".into(),
            });
        }
        let max_join_request_bytes = positive(
            "max_join_request_bytes",
            self.max_join_request_bytes,
            d.max_join_request_bytes as u64,
        )?;
        if max_join_request_bytes >= max_frame_bytes {
            return Err(ConfigError::Invalid {
                key: "max_join_request_bytes",
                why: "must be smaller than max_frame_bytes".into(),
            });
        }
        let log_format = match self.log_format.as_deref().map(str::trim) {
            None | Some("human") => LogFormat::Human,
            Some("json") => LogFormat::Json,
            Some(_) => {
                return Err(ConfigError::Invalid {
                    key: "log_format",
                    why: "expected \"human\" or \"json\"".into(),
                });
            }
        };
        let rate = |key: &'static str, v: Option<u64>, def: u32| -> Result<u32, ConfigError> {
            u32::try_from(positive(key, v, u64::from(def))?).map_err(|_| ConfigError::Invalid {
                key,
                why: "too large".into(),
            })
        };
        let metrics_listen = match self.metrics_listen.as_deref().map(str::trim) {
            None | Some("") | Some("off") => None,
            Some(s) => {
                let addr: SocketAddr = s.parse().map_err(|_| ConfigError::Invalid {
                    key: "metrics_listen",
                    why: "expected IP:PORT such as 127.0.0.1:9464, or \"off\"".into(),
                })?;
                // The metrics carry no content, but counts and timings are
                // still for the operator alone: loopback only (scrape through
                // an SSH tunnel or a local Prometheus).
                if !addr.ip().is_loopback() {
                    return Err(ConfigError::Invalid {
                        key: "metrics_listen",
                        why: "must be a loopback address such as 127.0.0.1:9464".into(),
                    });
                }
                Some(addr)
            }
        };
        let path = |v: Option<String>| {
            v.map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .map(std::path::PathBuf::from)
        };
        let (tls_cert, tls_key) = match (path(self.tls_cert), path(self.tls_key)) {
            (Some(c), Some(k)) => (Some(c), Some(k)),
            (None, None) => (None, None),
            (Some(_), None) | (None, Some(_)) => {
                return Err(ConfigError::Invalid {
                    key: "tls_cert",
                    why: "set both tls_cert and tls_key (PEM files), or neither to use the \
                          self-signed certificate"
                        .into(),
                });
            }
        };
        let to_usize = |key: &'static str, v: u64| {
            usize::try_from(v).map_err(|_| ConfigError::Invalid {
                key,
                why: "too large".into(),
            })
        };
        let count = |key: &'static str, v: Option<u64>, def: usize| {
            to_usize(key, positive(key, v, def as u64)?)
        };
        let unauthenticated_buffer_bytes = count(
            "unauthenticated_buffer_bytes",
            self.unauthenticated_buffer_bytes,
            d.unauthenticated_buffer_bytes,
        )?;
        let pre_auth = pre_auth_frame_cap(
            to_usize("max_frame_bytes", max_frame_bytes)?,
            to_usize("max_group_state_bytes", max_group_state_bytes)?,
        );
        if unauthenticated_buffer_bytes < pre_auth {
            return Err(ConfigError::Invalid {
                key: "unauthenticated_buffer_bytes",
                why: format!(
                    "must be at least {pre_auth} (one group state write before signing in)"
                ),
            });
        }
        Ok(Config {
            listen,
            public_addr,
            max_frame_bytes: to_usize("max_frame_bytes", max_frame_bytes)?,
            max_envelope_bytes: to_usize("max_envelope_bytes", max_envelope_bytes)?,
            mailbox_max_envelopes: positive(
                "mailbox_max_envelopes",
                self.mailbox_max_envelopes,
                d.mailbox_max_envelopes,
            )?,
            mailbox_max_bytes: positive(
                "mailbox_max_bytes",
                self.mailbox_max_bytes,
                d.mailbox_max_bytes,
            )?,
            envelope_ttl: duration("envelope_ttl", self.envelope_ttl, d.envelope_ttl)?,
            sweep_interval: duration("sweep_interval", self.sweep_interval, d.sweep_interval)?,
            prekey_low_water: self.prekey_low_water.unwrap_or(d.prekey_low_water),
            sender_certificate_ttl: duration(
                "sender_certificate_ttl",
                self.sender_certificate_ttl,
                d.sender_certificate_ttl,
            )?,
            max_connections: to_usize(
                "max_connections",
                positive(
                    "max_connections",
                    self.max_connections,
                    d.max_connections as u64,
                )?,
            )?,
            unauthenticated_connections: count(
                "unauthenticated_connections",
                self.unauthenticated_connections,
                d.unauthenticated_connections,
            )?,
            unauthenticated_connections_per_address: count(
                "unauthenticated_connections_per_address",
                self.unauthenticated_connections_per_address,
                d.unauthenticated_connections_per_address,
            )?,
            unauthenticated_idle: duration(
                "unauthenticated_idle",
                self.unauthenticated_idle,
                d.unauthenticated_idle,
            )?,
            unauthenticated_buffer_bytes,
            max_group_state_bytes: to_usize("max_group_state_bytes", max_group_state_bytes)?,
            max_groups: positive("max_groups", self.max_groups, d.max_groups)?,
            max_join_request_bytes: to_usize("max_join_request_bytes", max_join_request_bytes)?,
            max_join_requests_per_group: positive(
                "max_join_requests_per_group",
                self.max_join_requests_per_group,
                d.max_join_requests_per_group,
            )?,
            connections_per_address: to_usize(
                "connections_per_address",
                positive(
                    "connections_per_address",
                    self.connections_per_address,
                    d.connections_per_address as u64,
                )?,
            )?,
            registrations_per_address_per_hour: rate(
                "registrations_per_address_per_hour",
                self.registrations_per_address_per_hour,
                d.registrations_per_address_per_hour,
            )?,
            sends_per_minute: rate(
                "sends_per_minute",
                self.sends_per_minute,
                d.sends_per_minute,
            )?,
            bundle_fetches_per_hour: rate(
                "bundle_fetches_per_hour",
                self.bundle_fetches_per_hour,
                d.bundle_fetches_per_hour,
            )?,
            one_time_keys_per_hour: rate(
                "one_time_keys_per_hour",
                self.one_time_keys_per_hour,
                d.one_time_keys_per_hour,
            )?,
            // 0 turns the check off (the relay then stops on the first failed write).
            min_free_disk_bytes: self.min_free_disk_bytes.unwrap_or(d.min_free_disk_bytes),
            handshakes_per_second: rate(
                "handshakes_per_second",
                self.handshakes_per_second,
                d.handshakes_per_second,
            )?,
            handshakes_per_address_per_second: rate(
                "handshakes_per_address_per_second",
                self.handshakes_per_address_per_second,
                d.handshakes_per_address_per_second,
            )?,
            metrics_listen,
            tls_cert,
            tls_key,
            log_format,
        })
    }
}

impl Config {
    /// Parses `text`, applies the process environment's overrides and validates.
    pub fn load(text: &str) -> Result<Config, ConfigError> {
        let mut raw = RawConfig::parse(text)?;
        raw.apply_env(|k| std::env::var(k).ok())?;
        raw.validate()
    }
}

impl Config {
    /// The effective settings as TOML, every key spelled out (for `check-config`).
    pub fn to_toml(&self) -> String {
        let public = match &self.public_addr {
            Some(p) => format!("public_addr = \"{p}\"\n"),
            None => "# public_addr unset: invite links use the listen address\n".to_string(),
        };
        let log = match self.log_format {
            LogFormat::Human => "human",
            LogFormat::Json => "json",
        };
        let metrics = match self.metrics_listen {
            Some(a) => format!("metrics_listen = \"{a}\"\n"),
            None => "metrics_listen = \"off\"\n".to_string(),
        };
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(c), Some(k)) => format!(
                "tls_cert = {:?}\ntls_key = {:?}\n",
                c.display().to_string(),
                k.display().to_string()
            ),
            _ => "# tls_cert and tls_key unset: the self-signed certificate is used\n".to_string(),
        };
        format!(
            "listen = \"{}\"\n{public}max_frame_bytes = {}\nmax_envelope_bytes = {}\n\
             mailbox_max_envelopes = {}\nmailbox_max_bytes = {}\nenvelope_ttl = \"{}\"\n\
             sweep_interval = \"{}\"\nprekey_low_water = {}\nsender_certificate_ttl = \"{}\"\n\
             max_connections = {}\nunauthenticated_connections = {}\n\
             unauthenticated_connections_per_address = {}\nunauthenticated_idle = \"{}\"\n\
             unauthenticated_buffer_bytes = {}\nmax_group_state_bytes = {}\nmax_groups = {}\n\
             max_join_request_bytes = {}\nmax_join_requests_per_group = {}\n\
             connections_per_address = {}\nregistrations_per_address_per_hour = {}\n\
             sends_per_minute = {}\nbundle_fetches_per_hour = {}\none_time_keys_per_hour = {}\n\
             min_free_disk_bytes = {}\nhandshakes_per_second = {}\n\
             handshakes_per_address_per_second = {}\n{metrics}{tls}log_format = \"{log}\"\n",
            self.listen,
            self.max_frame_bytes,
            self.max_envelope_bytes,
            self.mailbox_max_envelopes,
            self.mailbox_max_bytes,
            format_duration(self.envelope_ttl),
            format_duration(self.sweep_interval),
            self.prekey_low_water,
            format_duration(self.sender_certificate_ttl),
            self.max_connections,
            self.unauthenticated_connections,
            self.unauthenticated_connections_per_address,
            format_duration(self.unauthenticated_idle),
            self.unauthenticated_buffer_bytes,
            self.max_group_state_bytes,
            self.max_groups,
            self.max_join_request_bytes,
            self.max_join_requests_per_group,
            self.connections_per_address,
            self.registrations_per_address_per_hour,
            self.sends_per_minute,
            self.bundle_fetches_per_hour,
            self.one_time_keys_per_hour,
            self.min_free_disk_bytes,
            self.handshakes_per_second,
            self.handshakes_per_address_per_second,
        )
    }
}

/// The `SOTTO_RELAY_<KEY>` variables `env` sets that override config.toml.
pub fn env_overrides(env: impl Fn(&str) -> Option<String>) -> Vec<String> {
    KEYS.iter()
        .map(|k| format!("SOTTO_RELAY_{}", k.to_uppercase()))
        .filter(|name| env(name).is_some())
        .collect()
}

/// Extra room over `max_group_state_bytes` in a request before sign-in (the
/// group write's keys and signature beside its state).
const PRE_AUTH_SLACK: usize = 16 * 1024;

/// The largest request frame accepted before a connection signs in: the
/// requests allowed then (registration with its prekeys, about 170 KiB, and
/// group requests) fit under one group state write, so strangers cannot make
/// the relay hold a full `max_frame_bytes` per stream.
pub fn pre_auth_frame_cap(max_frame_bytes: usize, max_group_state_bytes: usize) -> usize {
    max_frame_bytes.min(max_group_state_bytes.saturating_add(PRE_AUTH_SLACK))
}

impl Config {
    /// [`pre_auth_frame_cap`] for this configuration.
    pub fn pre_auth_max_frame(&self) -> usize {
        pre_auth_frame_cap(self.max_frame_bytes, self.max_group_state_bytes)
    }
}

/// Parses `30s`, `30m`, `12h`, `7d` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration; use forms like 30m, 12h or 7d"))?;
    let secs_per = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "`{s}` has an unknown unit; use s, m, h or d (e.g. 7d)"
            ));
        }
    };
    if n == 0 {
        return Err("a duration must be greater than zero".into());
    }
    n.checked_mul(secs_per)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("`{s}` is too long"))
}

/// Formats a duration in the largest unit that divides it, the inverse of [`parse_duration`].
// `is_multiple_of` needs Rust 1.87; the workspace's rust-version is 1.85.
#[allow(clippy::manual_is_multiple_of)]
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s % 86_400 == 0 {
        format!("{}d", s / 86_400)
    } else if s % 3600 == 0 {
        format!("{}h", s / 3600)
    } else if s % 60 == 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

fn check_host_port(s: &str) -> Result<(), String> {
    let bad = || format!("expected HOST:PORT such as relay.example.org:4433, got `{s}`");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    Ok(())
}

/// The host part of `HOST:PORT` (brackets around IPv6 removed).
pub fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// The commented `config.toml` written by `init`; every key at its default.
pub fn example_config(
    listen: SocketAddr,
    public_addr: Option<&str>,
    tls: Option<(&std::path::Path, &std::path::Path)>,
) -> String {
    let d = Config::default();
    let tls = match tls {
        Some((cert, key)) => format!(
            "tls_cert = {:?}\ntls_key = {:?}",
            cert.display().to_string(),
            key.display().to_string()
        ),
        None => "# tls_cert = \"/var/lib/sotto-relay/tls/fullchain.pem\"\n\
                 # tls_key = \"/var/lib/sotto-relay/tls/privkey.pem\""
            .to_string(),
    };
    let public = match public_addr {
        Some(p) => format!("public_addr = \"{p}\""),
        None => "# public_addr = \"relay.example.org:4433\"".to_string(),
    };
    format!(
        r#"# Sotto relay configuration. Every key has a safe default; delete a line to use it.
# Each key can be overridden by an environment variable SOTTO_RELAY_<KEY>, e.g.
# SOTTO_RELAY_LISTEN=0.0.0.0:4433. Durations take forms like 30m, 12h, 7d.

# UDP address to listen on. 127.0.0.1 only accepts local clients; use 0.0.0.0:4433 on a server.
listen = "{listen}"

# HOST:PORT that clients dial; it goes into invite links. Unset means the listen address.
{public}

# Largest request frame in bytes; bigger frames are refused before they are read.
max_frame_bytes = {max_frame}

# Largest sealed envelope (one message) in bytes.
max_envelope_bytes = {max_env}

# Per-mailbox quota: envelopes waiting for one device, and their total bytes.
mailbox_max_envelopes = {mb_env}
mailbox_max_bytes = {mb_bytes}

# Undelivered envelopes older than this are deleted, and how often that check runs.
envelope_ttl = "{ttl}"
sweep_interval = "{sweep}"

# Clients are told to upload more one-time prekeys when fewer than this remain.
prekey_low_water = {low}

# Lifetime of the sender certificates the relay signs for sealed sender.
sender_certificate_ttl = "{cert_ttl}"

# Most simultaneous signed-in client connections.
max_connections = {max_conn}

# Connections that have not signed in (yet) get their own, smaller budget, so
# strangers who never sign in cannot take members' slots: at most this many in
# all and from one address; past either, a new connection closes the oldest
# one that has not signed in (apps reconnect by themselves). One with no
# request in progress for `unauthenticated_idle` is closed. Group requests use
# such connections, so keep the idle time at a few seconds or more.
unauthenticated_connections = {unauth}
unauthenticated_connections_per_address = {unauth_addr}
unauthenticated_idle = "{unauth_idle}"
# Memory for requests being received before sign-in, in bytes, in all; past
# it such requests are refused with "try again shortly". Before sign-in a
# request may be at most max_group_state_bytes + 16 KiB.
unauthenticated_buffer_bytes = {unauth_buf}

# Groups: the largest stored group state (encrypted, padded) in bytes, and the
# most groups this relay keeps.
max_group_state_bytes = {group_bytes}
max_groups = {groups}

# Join requests through a group's join link: largest one in bytes, and the most
# waiting per group until an admin handles them.
max_join_request_bytes = {join_bytes}
max_join_requests_per_group = {join_pending}

# Abuse limits. Each refuses with a clear "try again in N" error and touches
# no other account. Per-address limits count an IPv4 address or an IPv6 /64;
# keep them generous, because a whole office often shares one NAT address.
# connections_per_address counts signed-in connections.
connections_per_address = {conn_addr}
registrations_per_address_per_hour = {reg_addr}
# New connections per second, in all and from one address. Past them the
# relay refuses handshakes before doing any cryptography, so a flood of
# connections cannot take the CPU from members already connected. Bursts of
# five (in all) and ten (per address) seconds' worth are allowed, so members
# reconnecting after a restart get straight in.
handshakes_per_second = {hs}
handshakes_per_address_per_second = {hs_addr}
# Sends (1:1 or to a group) per account per minute.
sends_per_minute = {sends}
# Prekey bundles one account may fetch per hour, and one-time prekeys handed
# out per device per hour: past that, new sessions use the device's signed
# and last-resort keys, so nobody can drain a victim's one-time keys.
bundle_fetches_per_hour = {bundles}
one_time_keys_per_hour = {otk}

# Free disk space to keep: below it the relay refuses new messages and
# registrations (clients keep them and retry) instead of filling the disk.
# Deliveries go on, and it recovers by itself once space is freed. 0 turns the
# check off: a write that then meets a full disk stops the relay (to be
# restarted by systemd) rather than leave it answering with errors.
min_free_disk_bytes = {min_free}

# Prometheus text metrics (counts and timings, never content) on a loopback
# address, e.g. "127.0.0.1:9464". "off" disables them.
metrics_listen = "off"

# Your own TLS certificate chain and key (PEM), e.g. from an ACME client.
# Unset: the self-signed certificate in tls/ is used. Clients pin the key, so
# renew with the same key (certbot --reuse-key); `kill -HUP` reloads the files.
# Relative paths are inside the data directory.
{tls}

# Log format on stderr: "human" or "json".
log_format = "human"
"#,
        max_frame = d.max_frame_bytes,
        max_env = d.max_envelope_bytes,
        mb_env = d.mailbox_max_envelopes,
        mb_bytes = d.mailbox_max_bytes,
        ttl = format_duration(d.envelope_ttl),
        sweep = format_duration(d.sweep_interval),
        low = d.prekey_low_water,
        cert_ttl = format_duration(d.sender_certificate_ttl),
        max_conn = d.max_connections,
        unauth = d.unauthenticated_connections,
        unauth_addr = d.unauthenticated_connections_per_address,
        unauth_idle = format_duration(d.unauthenticated_idle),
        unauth_buf = d.unauthenticated_buffer_bytes,
        group_bytes = d.max_group_state_bytes,
        groups = d.max_groups,
        join_bytes = d.max_join_request_bytes,
        join_pending = d.max_join_requests_per_group,
        conn_addr = d.connections_per_address,
        reg_addr = d.registrations_per_address_per_hour,
        sends = d.sends_per_minute,
        bundles = d.bundle_fetches_per_hour,
        otk = d.one_time_keys_per_hour,
        min_free = d.min_free_disk_bytes,
        hs = d.handshakes_per_second,
        hs_addr = d.handshakes_per_address_per_second,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_toml_round_trips() {
        let config = Config {
            public_addr: Some("relay.example.org:4433".into()),
            envelope_ttl: Duration::from_secs(3 * 3600),
            log_format: LogFormat::Json,
            sends_per_minute: 7,
            one_time_keys_per_hour: 3,
            metrics_listen: Some("127.0.0.1:9464".parse().expect("addr")),
            tls_cert: Some("/etc/sotto/fullchain.pem".into()),
            tls_key: Some("/etc/sotto/privkey.pem".into()),
            ..Config::default()
        };
        let mut raw = RawConfig::parse(&config.to_toml()).expect("parses");
        raw.apply_env(no_env).expect("no env");
        assert_eq!(raw.validate().expect("valid"), config);
        let env = |k: &str| (k == "SOTTO_RELAY_LISTEN").then(|| "0.0.0.0:1".to_string());
        assert_eq!(env_overrides(env), vec!["SOTTO_RELAY_LISTEN".to_string()]);
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn example_config_equals_defaults() {
        let d = Config::default();
        let text = example_config(d.listen, None, None);
        let mut raw = RawConfig::parse(&text).expect("example parses");
        raw.apply_env(no_env).expect("no env");
        assert_eq!(raw.validate().expect("valid"), d);
        assert_eq!(RawConfig::parse("").expect("empty").validate(), Ok(d));
    }

    #[test]
    fn unknown_key_is_rejected() {
        assert!(matches!(
            RawConfig::parse("listn = \"1.2.3.4:5\""),
            Err(ConfigError::Parse(_))
        ));
    }

    #[test]
    fn env_overrides_and_validation() {
        let mut raw = RawConfig::parse("envelope_ttl = \"7d\"").expect("parse");
        raw.apply_env(|k| (k == "SOTTO_RELAY_ENVELOPE_TTL").then(|| "12h".to_string()))
            .expect("env");
        let c = raw.validate().expect("valid");
        assert_eq!(c.envelope_ttl, Duration::from_secs(12 * 3600));
        let bad = RawConfig::parse("log_format = \"xml\"").expect("parse");
        assert!(matches!(
            bad.validate(),
            Err(ConfigError::Invalid {
                key: "log_format",
                ..
            })
        ));
        let bad = RawConfig::parse("public_addr = \"nohost\"").expect("parse");
        assert!(bad.validate().is_err());
        // Metrics are for the operator alone: a public address is refused.
        let bad = RawConfig::parse("metrics_listen = \"0.0.0.0:9464\"").expect("parse");
        assert!(matches!(
            bad.validate(),
            Err(ConfigError::Invalid {
                key: "metrics_listen",
                ..
            })
        ));
        let bad = RawConfig::parse("tls_cert = \"/etc/cert.pem\"").expect("parse");
        assert!(matches!(
            bad.validate(),
            Err(ConfigError::Invalid {
                key: "tls_cert",
                ..
            })
        ));
        let bad = RawConfig::parse("sends_per_minute = 0").expect("parse");
        assert!(bad.validate().is_err());
    }

    #[test]
    fn durations_parse_and_format() {
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert!(parse_duration("3w").is_err());
        assert!(parse_duration("0h").is_err());
        assert_eq!(format_duration(Duration::from_secs(86_400)), "1d");
        assert_eq!(host_of("[::1]:4433"), "::1");
        assert_eq!(host_of("relay.example.org:1"), "relay.example.org");
    }
}
