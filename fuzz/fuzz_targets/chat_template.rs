//! Chat-template compiling and rendering with hostile templates and messages: endless or huge
//! loops, huge outputs and deep recursion must end in an error, not a hang, a crash or an OOM.
//!
//! Input (text, NUL-separated, so real templates make readable seeds; see make_seeds.py):
//! `template \0 flags \0 bos \0 eos (\0 role \0 content)*`, where flags containing `g` sets
//! `add_generation_prompt` and an empty bos/eos means the token is absent. Rendering runs on a
//! thread with a 2 MiB stack, the smallest a caller gives it (Rust's and tokio's default).

#![no_main]

use libfuzzer_sys::fuzz_target;
use wick::io::chat_template::{ChatMessage, ChatTemplate};
use wick_fuzz::check_error;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.split('\0');
    let template = parts.next().unwrap_or_default().to_string();
    let flags = parts.next().unwrap_or_default();
    let add_generation_prompt = flags.contains('g');
    let token = |t: Option<&str>| t.filter(|t| !t.is_empty()).map(String::from);
    let bos = token(parts.next());
    let eos = token(parts.next());
    let rest: Vec<&str> = parts.collect();
    let messages: Vec<ChatMessage> = rest
        .chunks(2)
        .map(|pair| ChatMessage::new(pair[0], pair.get(1).copied().unwrap_or_default()))
        .collect();
    let worker = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let chat = match ChatTemplate::new(&template, bos, eos) {
                Ok(t) => t,
                Err(e) => return check_error("ChatTemplate::new", &e),
            };
            for n in [messages.len(), messages.len().saturating_sub(1)] {
                if let Err(e) = chat.render(&messages[..n], add_generation_prompt) {
                    check_error("render", &e);
                }
            }
        })
        .expect("spawn the render thread");
    if let Err(panic) = worker.join() {
        std::panic::resume_unwind(panic);
    }
});
