//! `cargo fuzz run table`: see `warren_protocol::fuzz_harness::table` for what it drives and checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    warren_protocol::fuzz_harness::table(data);
});
