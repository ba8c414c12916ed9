//! Publish times of documents, decoded from the clock of their `_meta/uuid`.
//!
//! Gazette stamps every document with a v1 UUID whose 60-bit timestamp counts 100ns
//! intervals since 1582-10-15 and whose clock sequence carries a 4-bit counter and 10
//! bits of flags. A Gazette `Clock` is the timestamp shifted left by 4 with the counter
//! in the low bits, so clocks order documents exactly as their producer wrote them. The
//! counter orders documents within one 100ns interval and is not part of the time, as in
//! Gazette's `Clock.AsTime`.

use time::OffsetDateTime;
use uuid::Uuid;

/// 100ns intervals between 1582-10-15 (the UUID epoch) and 1970-01-01 (the Unix epoch).
const G1582_NS100: u64 = 122_192_928_000_000_000;

/// A Gazette message clock: a v1 UUID timestamp (60 bits) and its sequence counter (4 bits).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Clock(pub u64);

/// A `_meta/uuid` that carries no Gazette clock.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClockError {
    /// The text is not a UUID at all.
    #[error("document UUID {text:?} is not a UUID: {reason}")]
    NotAUuid {
        /// The offending text (at most 64 characters of it).
        text: String,
        /// Why the parser refused it.
        reason: String,
    },
    /// A UUID of another version has no timestamp to decode.
    #[error("document UUID {0} is version {1}, not a v1 (time-based) UUID")]
    NotV1(Uuid, usize),
    /// The clock predates the Unix epoch, which no Gazette producer writes.
    #[error("clock {0:#x} is before 1970-01-01 and was not written by a Gazette producer")]
    BeforeUnixEpoch(u64),
}

impl Clock {
    /// Decodes the clock of a v1 UUID, exactly as Gazette's `GetClock`.
    pub fn from_uuid(uuid: &Uuid) -> Result<Self, ClockError> {
        let version = uuid.get_version_num();
        if version != 1 {
            return Err(ClockError::NotV1(*uuid, version));
        }
        let b = uuid.as_bytes();
        let low = u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        let mid = u64::from(u16::from_be_bytes([b[4], b[5]]));
        // The version nibble sits in the top of these 16 bits and shifts out of the u64.
        let high = u64::from(u16::from_be_bytes([b[6], b[7]]));
        let counter = u64::from(b[8] >> 2) & 0xf;
        Ok(Clock(low << 4 | mid << 36 | high << 52 | counter))
    }

    /// Parses the text of a `_meta/uuid` and decodes its clock.
    pub fn from_uuid_str(text: &str) -> Result<Self, ClockError> {
        let uuid = Uuid::parse_str(text).map_err(|err| ClockError::NotAUuid {
            text: text.chars().take(64).collect(),
            reason: err.to_string(),
        })?;
        Self::from_uuid(&uuid)
    }

    /// Builds the clock of a Unix time, with a zero counter (Gazette's `NewClock`).
    /// Precision is 100ns; finer nanoseconds are truncated.
    pub fn from_unix(seconds: u64, nanos: u32) -> Self {
        Clock((seconds * 10_000_000 + u64::from(nanos) / 100 + G1582_NS100) << 4)
    }

    /// The publish time this clock stands for, at 100ns precision.
    pub fn to_time(self) -> Result<OffsetDateTime, ClockError> {
        let ticks = (self.0 >> 4)
            .checked_sub(G1582_NS100)
            .ok_or(ClockError::BeforeUnixEpoch(self.0))?;
        let nanos = i128::from(ticks) * 100;
        // 60 bits of 100ns ticks reach year 5236, inside `time`'s range (year 9999).
        Ok(OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .expect("every 60-bit UUID timestamp is a representable date"))
    }

    /// Builds a v1 UUID carrying this clock, a producer id and flags, as Gazette's
    /// `BuildUUID` does. Used by tests, the demo and the benches to make documents.
    pub fn to_uuid(self, producer: [u8; 6], flags: u16) -> Uuid {
        let c = self.0;
        let low = ((c >> 4) as u32).to_be_bytes();
        let mid = ((c >> 36) as u16).to_be_bytes();
        let high = ((c >> 52) as u16 | 0x1000).to_be_bytes();
        let seq = (((c << 10) as u16) & 0x3c00 | (flags & 0x3ff) | 0x8000).to_be_bytes();
        let p = producer;
        Uuid::from_bytes([
            low[0], low[1], low[2], low[3], mid[0], mid[1], high[0], high[1], seq[0], seq[1], p[0],
            p[1], p[2], p[3], p[4], p[5],
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::format_description::well_known::Rfc3339;

    fn rfc3339(clock: Clock) -> String {
        clock
            .to_time()
            .expect("valid")
            .format(&Rfc3339)
            .expect("formats")
    }

    /// UUIDs whose times were computed independently, with Python's `uuid` module
    /// (`uuid.UUID(s).time` is the 60-bit count of 100ns since 1582-10-15).
    #[test]
    fn known_uuids_decode_to_known_times() {
        let cases = [
            // Gazette's own fixture: Unix(1567304621, 981273734) after two 1µs ticks.
            (
                "83fc2f95-cc5f-11e9-8000-010203040506",
                "2019-09-01T02:23:41.9812757Z",
            ),
            // The Unix epoch.
            (
                "13814000-1dd2-11b2-8000-010000000000",
                "1970-01-01T00:00:00Z",
            ),
            // 2024-02-29T12:34:56 plus 1234567 ticks of 100ns.
            (
                "f1c3ae87-d6fe-11ee-8000-0b0000000001",
                "2024-02-29T12:34:56.1234567Z",
            ),
            // The same time with counter 0xf: the counter orders, it does not move time.
            (
                "f1c3ae87-d6fe-11ee-bc00-0b0000000001",
                "2024-02-29T12:34:56.1234567Z",
            ),
            // Made by Python's uuid.uuid1() (clock_seq 0x2aa) on 2026-11-24.
            (
                "60c94be4-e810-11f1-82aa-0b0000000002",
                "2026-11-24T14:07:26.61217Z",
            ),
        ];
        for (text, expect) in cases {
            let clock = Clock::from_uuid_str(text).expect(text);
            assert_eq!(rfc3339(clock), expect, "{text}");
        }
    }

    #[test]
    fn counter_orders_but_does_not_move_time() {
        let base = Clock::from_unix(12, 300);
        let ticked = Clock(base.0 + 3);
        assert!(ticked > base);
        assert_eq!(ticked.to_time(), base.to_time());
        let uuid = ticked.to_uuid([1, 2, 3, 4, 5, 6], 0x2aa);
        assert_eq!(Clock::from_uuid(&uuid), Ok(ticked));
    }

    #[test]
    fn build_and_decode_round_trip_over_the_full_range() {
        for clock in [0x1b21_dd21_3814_0000, 0x1eec_a4a5_9b4c_5f0d, u64::MAX] {
            let uuid = Clock(clock).to_uuid([0xff; 6], 0x3ff);
            assert_eq!(uuid.get_version_num(), 1);
            assert_eq!(Clock::from_uuid(&uuid), Ok(Clock(clock)));
        }
    }

    #[test]
    fn non_v1_and_garbage_are_typed_errors() {
        assert!(matches!(
            Clock::from_uuid_str("9b2f7d1e-4c3a-4e8b-9f00-1234567890ab"),
            Err(ClockError::NotV1(_, 4))
        ));
        assert!(matches!(
            Clock::from_uuid_str("not-a-uuid"),
            Err(ClockError::NotAUuid { .. })
        ));
        assert_eq!(Clock(5).to_time(), Err(ClockError::BeforeUnixEpoch(5)),);
        // The largest clock still decodes (year 5236) rather than panicking.
        assert!(Clock(u64::MAX).to_time().is_ok());
    }
}
