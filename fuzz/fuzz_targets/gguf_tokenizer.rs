//! A whole GGUF file as bytes, for its `tokenizer.ggml.*` metadata: the tokenizer wick builds
//! from it (vocabulary, merges, token types, pre-tokenizer, BOS/EOS post-processing), then
//! encoding and decoding a few short texts with it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wick::io::gguf::GgufFile;
use wick::io::gguf_tokenizer::{special_tokens, tokenizer_from_gguf};
use wick_fuzz::check_error;

const TEXTS: &[&str] = &[
    "Hello, world! 123 4567",
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n",
    "  héllo\t\r\n 🙂 ümlaut 日本語 x",
    "",
];

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::from_bytes("fuzz.gguf", data.to_vec()) else {
        return; // the gguf_file target covers files that do not open
    };
    let tokenizer = match tokenizer_from_gguf(&file) {
        Ok(t) => t,
        Err(e) => return check_error("tokenizer_from_gguf", &e),
    };
    if let Err(e) = special_tokens(&file) {
        check_error("special_tokens", &e);
    }
    for text in TEXTS {
        for add_special in [false, true] {
            let Ok(encoding) = tokenizer.encode(*text, add_special) else {
                continue;
            };
            let ids = encoding.get_ids();
            for id in ids {
                assert!(
                    tokenizer.id_to_token(*id).is_some(),
                    "encoding gave id {id}, which has no token"
                );
            }
            let _ = tokenizer.decode(ids, true);
            let _ = tokenizer.decode(ids, false);
        }
    }
});
