//! `cargo fuzz run properties`: see `warren_protocol::fuzz_harness::properties` for what it drives and checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    warren_protocol::fuzz_harness::properties(data);
});
