//! `cargo fuzz run sasl`: see `warren_protocol::fuzz_harness::sasl` for what it drives and checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    warren_protocol::fuzz_harness::sasl(data);
});
