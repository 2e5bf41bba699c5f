//! A `tokenizer.json` as bytes: the tokenizer built from it (as generation loads it, then with
//! the embedding models' padding/truncation policy), then encoding and decoding a few short
//! texts, alone and as pairs.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use wick::io::tokenizer::{encode_all, tokenizer_from_json, with_length_policy};
use wick_fuzz::check_error;

const TEXTS: &[&str] = &[
    "Hello, world! 123 4567",
    "[CLS] what is the capital of france? [SEP] <s> </s> <|im_start|>",
    "  héllo\t\r\n 🙂 ümlaut 日本語 x",
    "",
];

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz/tokenizer.json");
    let tokenizer = match tokenizer_from_json(path, data) {
        Ok(t) => t,
        Err(e) => return check_error("tokenizer_from_json", &e),
    };
    for text in TEXTS {
        let Ok(encoding) = tokenizer.encode(*text, true) else {
            continue;
        };
        let _ = tokenizer.decode(encoding.get_ids(), true);
        let _ = tokenizer.decode(encoding.get_ids(), false);
    }
    let _ = tokenizer.encode((TEXTS[0], TEXTS[2]), true);
    let limited = match with_length_policy(tokenizer, path, 8) {
        Ok(t) => t,
        Err(e) => return check_error("with_length_policy", &e),
    };
    match encode_all(&limited, TEXTS) {
        Ok(all) => {
            for ids in all {
                assert!(ids.len() <= 8, "truncation at 8 gave {} tokens", ids.len());
                let _ = limited.decode(&ids, true);
            }
        }
        Err(e) => check_error("encode_all", &e),
    }
});
