//! One running generation: its cache, sampler, stop conditions and detokenizer, stepped one
//! token at a time by the engine. The per-token logic is `wick::generate::generate_until`'s, so
//! a request decodes exactly as `wick generate` does.

use tokio::sync::mpsc::UnboundedSender;
use wick::generate::{
    FinishReason, GenerationConfig, IncrementalDecoder, Sampler, StopConditions, TokenHistory,
};
use wick::nn::KvCache;
use wick::tokenizers::Tokenizer;

use super::{GenEvent, GenSummary};

pub struct Sequence<'t> {
    pub adapter: Option<String>,
    pub cache: KvCache,
    prompt: Vec<u32>,
    generated: Vec<u32>,
    sampler: Sampler,
    stop: StopConditions,
    decoder: IncrementalDecoder<'t>,
    context: usize,
    events: UnboundedSender<GenEvent>,
    finished: bool,
    /// Why it ended, once it has.
    reason: Option<FinishReason>,
    /// The last sampled token, to feed at the next decode step.
    pending: u32,
}

/// What a sequence needs after sampling a token.
pub enum Next {
    /// Feed this token to the model for the next logits.
    Feed(u32),
    /// The sequence is over (its summary has been sent, or the client is gone).
    Done,
}

impl<'t> Sequence<'t> {
    pub fn new(
        tokenizer: &'t Tokenizer,
        prompt: Vec<u32>,
        config: &GenerationConfig,
        adapter: Option<String>,
        cache: KvCache,
        context: usize,
        events: UnboundedSender<GenEvent>,
    ) -> wick::Result<Self> {
        Ok(Sequence {
            adapter,
            cache,
            sampler: Sampler::new(&config.sampling)?,
            stop: StopConditions::new(&config.eos_token_ids, config.max_tokens, &config.stop)?,
            decoder: IncrementalDecoder::new(tokenizer, &prompt),
            prompt,
            generated: Vec::new(),
            context,
            events,
            finished: false,
            reason: None,
            pending: 0,
        })
    }

    pub fn prompt(&self) -> &[u32] {
        &self.prompt
    }

    /// The client stopped listening (disconnected or dropped its request).
    pub fn is_abandoned(&self) -> bool {
        self.events.is_closed()
    }

    /// Samples from `logits`, sends any new text, and says whether to continue.
    pub fn advance(&mut self, logits: &mut [f32]) -> wick::Result<Next> {
        let history = TokenHistory {
            prompt: &self.prompt,
            generated: &self.generated,
        };
        let id = self.sampler.sample(logits, &history)?;
        self.generated.push(id);
        if self.stop.is_eos(id) {
            return self.finish(FinishReason::Eos);
        }
        let piece = self.decoder.push(id)?;
        let out = self.stop.strings_mut().push(&piece);
        if !self.emit(out.emit) {
            return self.finish(FinishReason::Cancelled);
        }
        if out.stopped {
            return self.finish(FinishReason::Stop);
        }
        let total = self.prompt.len() + self.generated.len();
        if self.stop.budget_spent(self.generated.len()) || total >= self.context {
            return self.finish(FinishReason::Length);
        }
        Ok(Next::Feed(id))
    }

    pub fn set_pending(&mut self, id: u32) {
        self.pending = id;
    }

    pub fn pending(&self) -> u32 {
        self.pending
    }

    /// Ends a sequence whose client left; nothing is sent.
    pub fn cancel(&mut self) {
        self.finished = true;
        self.reason = Some(FinishReason::Cancelled);
    }

    /// Ended because its client left.
    pub fn was_cancelled(&self) -> bool {
        self.reason == Some(FinishReason::Cancelled)
    }

    /// Sends a failure to the client and ends the sequence.
    pub fn fail(&mut self, message: String) {
        self.finished = true;
        let _ = self.events.send(GenEvent::Failed(message));
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// False once the receiver is gone.
    fn emit(&self, text: String) -> bool {
        text.is_empty() || self.events.send(GenEvent::Delta(text)).is_ok()
    }

    fn finish(&mut self, mut reason: FinishReason) -> wick::Result<Next> {
        self.finished = true;
        self.reason = Some(reason);
        if matches!(reason, FinishReason::Eos | FinishReason::Length) {
            // Incomplete characters and held-back text; a stop string may still complete here.
            let out = self.stop.strings_mut().push(&self.decoder.finish()?);
            self.emit(out.emit);
            if out.stopped {
                reason = FinishReason::Stop;
                self.reason = Some(reason);
            } else {
                let rest = self.stop.strings_mut().finish();
                self.emit(rest);
            }
        }
        let _ = self.events.send(GenEvent::Done(GenSummary {
            finish_reason: reason,
            prompt_tokens: self.prompt.len(),
            completion_tokens: self.generated.len(),
        }));
        Ok(Next::Done)
    }
}
