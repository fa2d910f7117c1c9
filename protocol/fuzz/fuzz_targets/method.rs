//! `cargo fuzz run method`: see `warren_protocol::fuzz_harness::method` for what it drives and checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    warren_protocol::fuzz_harness::method(data);
});
