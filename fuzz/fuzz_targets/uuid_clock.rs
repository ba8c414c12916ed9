//! UUID clock decoding: any 16 bytes and any text decode to a clock or a typed error,
//! never panic; any clock, producer and flags built into a UUID decode back to the clock;
//! and every clock either maps to a time or is a typed error.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use triggers::Clock;

#[derive(Debug, Arbitrary)]
struct Input {
    bytes: [u8; 16],
    text: String,
    clock: u64,
    producer: [u8; 6],
    flags: u16,
}

fuzz_target!(|input: Input| {
    if let Ok(clock) = Clock::from_uuid(&uuid::Uuid::from_bytes(input.bytes)) {
        let _ = clock.to_time();
    }
    let _ = Clock::from_uuid_str(&input.text);
    let built = Clock(input.clock).to_uuid(input.producer, input.flags);
    assert_eq!(Clock::from_uuid(&built), Ok(Clock(input.clock)));
    let _ = Clock(input.clock).to_time();
});
