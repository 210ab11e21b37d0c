//! # nexus-common
//!
//! The smallest shared vocabulary of the Nexus core: typed ids, timestamps and the [`Clock`]
//! port. Every other core crate may depend on this one; it depends on nothing of ours and
//! contains no platform code (it builds for `wasm32-unknown-unknown`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The timestamp as milliseconds since the Unix epoch.
    pub fn as_millis(self) -> i64 {
        self.0
    }

    /// A timestamp `ms` milliseconds later (saturating).
    pub fn plus_millis(self, ms: i64) -> Self {
        Self(self.0.saturating_add(ms))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Civil-from-days (Howard Hinnant): UTC date and time without a date crate.
        let secs = self.0.div_euclid(1000);
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400);
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        write!(
            f,
            "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
            sod / 3600,
            (sod / 60) % 60,
            sod % 60
        )
    }
}

/// The source of "now". Logic takes a `&dyn Clock` so tests can use a fixed or stepping clock.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The wall clock of the device (also works in browsers through `web-time`).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let d = web_time::SystemTime::now()
            .duration_since(web_time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

/// Error returned when a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseIdError(pub String);

impl fmt::Display for ParseIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a valid id: {:?}", self.0)
    }
}

impl std::error::Error for ParseIdError {}

macro_rules! define_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub uuid::Uuid);

        impl $name {
            /// A new, time-ordered (UUIDv7) id.
            pub fn new() -> Self {
                Self(uuid::Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                uuid::Uuid::parse_str(s.trim()).map(Self).map_err(|_| ParseIdError(s.to_owned()))
            }
        }
    };
}

define_id!(
    /// Identifies a companion.
    CompanionId
);
define_id!(
    /// Identifies a conversation.
    ConversationId
);
define_id!(
    /// Identifies a message.
    MessageId
);
define_id!(
    /// Identifies a long-term memory item.
    MemoryId
);
define_id!(
    /// Identifies an entry of the emotion journal (a reading or a fused state).
    JournalId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_strings_and_are_time_ordered() {
        let a = CompanionId::new();
        let b = CompanionId::new();
        assert!(a < b, "UUIDv7 ids sort by creation time");
        let parsed: CompanionId = a.to_string().parse().expect("parses");
        assert_eq!(a, parsed);
        assert!("not-an-id".parse::<CompanionId>().is_err());
    }

    #[test]
    fn timestamps_format_as_utc_dates() {
        assert_eq!(Timestamp(0).to_string(), "1970-01-01 00:00:00 UTC");
        assert_eq!(
            Timestamp(1_700_000_000_000).to_string(),
            "2023-11-14 22:13:20 UTC"
        );
        assert_eq!(
            Timestamp(951_782_400_000).to_string(),
            "2000-02-29 00:00:00 UTC"
        );
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.now() > Timestamp(1_577_836_800_000));
    }
}
