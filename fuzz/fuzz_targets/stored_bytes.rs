//! Any bytes as a stored `trigger-params` or `checkpoint` value: decoding returns a value
//! or an error, never panics; what decodes re-encodes to bytes that decode to the same
//! value; a checkpoint re-encodes to the same bytes every time (its maps are ordered); and
//! decoded params become variables or a typed error.

#![no_main]

use libfuzzer_sys::fuzz_target;
use triggers::Variables;
use triggers_proto::{Checkpoint, Message, TriggerParams};

fuzz_target!(|data: &[u8]| {
    if let Ok(params) = TriggerParams::decode(data) {
        let again = TriggerParams::decode(params.encode_to_vec().as_slice()).expect("re-decodes");
        assert_eq!(again, params);
        if let Ok(variables) = Variables::from_params(params) {
            // What was read back persists to the same variables.
            assert_eq!(Variables::from_params(variables.to_params()), Ok(variables));
        }
    }
    if let Ok(checkpoint) = Checkpoint::decode(data) {
        let bytes = checkpoint.encode_to_vec();
        let again = Checkpoint::decode(bytes.as_slice()).expect("re-decodes");
        assert_eq!(again, checkpoint);
        // Canonical once encoded: map entries in key order, duplicates gone.
        assert_eq!(again.encode_to_vec(), bytes);
    }
});
