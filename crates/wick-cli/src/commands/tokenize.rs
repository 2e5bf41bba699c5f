//! `wick tokenize`: the text on stdin, read verbatim, to the model's token ids; with `--text`,
//! token ids on stdin back to text.

use std::io::{Read, Write};

use anyhow::{Context, Result};
use clap::Args;
use wick::io::tokenizer::{decode_ids, encode_text, model_tokenizer};
use wick::io::ModelFiles;

#[derive(Args, Debug)]
pub struct TokenizeArgs {
    /// A .gguf file (its tokenizer.ggml.* metadata), or a directory or hub id with tokenizer.json.
    #[arg(long, short)]
    pub model: String,
    /// Add the special tokens the model adds to a text (BOS, EOS, BERT's CLS/SEP).
    #[arg(long, conflicts_with = "text")]
    pub add_special: bool,
    /// Read special-token text in the input (`<s>`, `<|im_start|>`) as plain text rather than as
    /// the special token (llama-tokenize's --no-parse-special).
    #[arg(long, conflicts_with = "text")]
    pub no_parse_special: bool,
    /// Decode instead: read whitespace-separated token ids from stdin and print their text as it
    /// is (special tokens included, no newline added).
    #[arg(long)]
    pub text: bool,
}

pub fn run(args: TokenizeArgs) -> Result<()> {
    let files = ModelFiles::resolve(&args.model)?;
    // Its errors name the file (and the tokenizer type wick cannot build).
    let mut tokenizer = model_tokenizer(&files)?;
    let mut input = Vec::new();
    std::io::stdin()
        .lock()
        .read_to_end(&mut input)
        .context("reading stdin")?;
    let input = String::from_utf8(input).map_err(|e| {
        anyhow::anyhow!(
            "stdin is not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })?;

    let output = if args.text {
        decode_ids(&tokenizer, &parse_ids(&input)?)?
    } else {
        tokenizer.set_encode_special_tokens(args.no_parse_special);
        let ids = encode_text(&tokenizer, &input, args.add_special)?;
        let ids: Vec<String> = ids.iter().map(u32::to_string).collect();
        ids.join(" ") + "\n"
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(output.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// Token ids separated by whitespace; anything else is an error quoting the word.
fn parse_ids(input: &str) -> Result<Vec<u32>> {
    input
        .split_whitespace()
        .enumerate()
        .map(|(i, word)| {
            word.parse().with_context(|| {
                format!(
                    "stdin word {}: `{}` is not a token id",
                    i + 1,
                    word.escape_debug()
                )
            })
        })
        .collect()
}
