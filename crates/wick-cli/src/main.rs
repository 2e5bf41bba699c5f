//! The `wick` command-line tool.

mod args;
mod commands;

use clap::{Parser, Subcommand};

// Model inference allocates and frees large activation buffers every layer; glibc malloc returns
// them to the OS and page-faults them back in each time, mimalloc keeps them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` (the same index in mimalloc v2 and v3's `mi_option_e`).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed memory mapped for reuse. By default mimalloc hands freed spans back to the OS
/// after 10 ms, and buffers of tens of MB (activations, logits, gradients) are then
/// page-faulted and zeroed again on every layer or step: in a training run that was 320k page
/// faults and a third of the CPU time. The process's peak stays reserved instead, as with
/// PyTorch's caching allocator.
fn keep_freed_memory() {
    // SAFETY: sets a plain integer option; mimalloc reads options atomically.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

#[derive(Parser)]
#[command(
    name = "wick",
    version,
    about = "Local LoRA fine-tuning, text generation and sentence embeddings"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Sentence embeddings, one JSON array (or one .npy row) per input text.
    Embed(commands::embed::EmbedArgs),
    /// Text generation: streams the completion of PROMPT to stdout, statistics to stderr.
    Generate(commands::generate::GenerateArgs),
    /// Multi-turn chat with the model's chat template (reads stdin lines when not a terminal).
    Chat(commands::chat::ChatArgs),
    /// LoRA fine-tuning on JSONL data, with validation, checkpoints and --resume.
    Train(Box<commands::train::TrainArgs>),
    /// Merge a PEFT LoRA adapter into its base model and write a Hugging Face model directory.
    Merge(commands::merge::MergeArgs),
    /// Perplexity of a text file, by llama-perplexity's method: `PPL = <value> +/- <stderr>`.
    Perplexity(commands::perplexity::PerplexityArgs),
    /// OpenAI-compatible HTTP server: embeddings, chat and completions, LoRA adapters by name.
    Serve(commands::serve::ServeArgs),
    /// Token ids of the text on stdin (read verbatim), space-separated; --text decodes ids.
    Tokenize(commands::tokenize::TokenizeArgs),
}

fn main() {
    keep_freed_memory();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Embed(args) => commands::embed::run(args),
        Command::Generate(args) => commands::generate::run(args),
        Command::Chat(args) => commands::chat::run(args),
        Command::Train(args) => commands::train::run(*args),
        Command::Merge(args) => commands::merge::run(args),
        Command::Perplexity(args) => commands::perplexity::run(args),
        Command::Serve(args) => commands::serve::run(args),
        Command::Tokenize(args) => commands::tokenize::run(args),
    };
    if let Err(err) = result {
        // One line: the chain of causes, outermost first.
        let chain: Vec<String> = err.chain().map(|e| e.to_string()).collect();
        eprintln!("error: {}", dedup_chain(chain).join(": "));
        std::process::exit(1);
    }
}

/// Drops causes whose text is already contained in the previous message (thiserror variants
/// often embed their source).
fn dedup_chain(chain: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(chain.len());
    for msg in chain {
        if out.last().is_some_and(|prev| prev.contains(&msg)) {
            continue;
        }
        out.push(msg);
    }
    out
}
