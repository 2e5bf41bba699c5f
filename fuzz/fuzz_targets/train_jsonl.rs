//! Training data as bytes: each line of a JSONL file through the public line parser
//! (`{"text"}`, `{"prompt","completion"}`, `{"messages"}` records), as `read_jsonl` reads it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wick::train::data::parse_line;
use wick_fuzz::check_message;

fuzz_target!(|data: &[u8]| {
    // read_jsonl reads lines with BufRead::lines, which rejects a file that is not UTF-8.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        // to_string: whatever the error type becomes, its message must be one line.
        if let Err(message) = parse_line(line) {
            check_message("parse_line", &message.to_string());
        }
    }
});
