//! The gateway's request decoding (CheckRequest and CheckBatchRequest bytes): refused or
//! decoded, never a panic, never more listings than the limit.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = cccgate_server::fuzz_decode(data, 64);
});
