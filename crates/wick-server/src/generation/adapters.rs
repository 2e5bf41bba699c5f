//! LoRA adapters by name on one base model. The adapters live inside the model's projections,
//! so the engine keeps each loaded adapter's per-projection weights here and swaps them in
//! before running a group of sequences that uses it (a decode step groups sequences by adapter;
//! the base weights are shared by all).

use std::collections::HashMap;
use std::path::Path;

use wick::lora::load_adapter;
use wick::models::DecoderModel;
use wick::nn::LoraAdapter;

/// The weights of one adapter, in `DecoderModel::projections_mut` order (None: not targeted).
type AdapterWeights = Vec<Option<LoraAdapter>>;

pub struct AdapterSet {
    loaded: HashMap<String, AdapterWeights>,
    /// The adapter currently attached to the model (None: the bare base model).
    active: Option<String>,
}

impl AdapterSet {
    pub fn new() -> Self {
        AdapterSet {
            loaded: HashMap::new(),
            active: None,
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.loaded.contains_key(name)
    }

    /// Reads a PEFT adapter from `dir` under `name` (replacing one of that name). On error the
    /// model is left as it was.
    pub fn load(&mut self, model: &mut DecoderModel, name: &str, dir: &Path) -> wick::Result<()> {
        self.activate(model, None)?;
        let (_, params) = load_adapter(dir, model)?;
        params.set_requires_grad(false);
        let weights = model
            .projections_mut()
            .into_iter()
            .map(|(_, linear)| linear.take_lora())
            .collect::<wick::Result<AdapterWeights>>()?;
        self.loaded.insert(name.to_string(), weights);
        Ok(())
    }

    /// Attaches adapter `name` (None: none) to every projection, unless it already is.
    pub fn activate(&mut self, model: &mut DecoderModel, name: Option<&str>) -> wick::Result<()> {
        if self.active.as_deref() == name {
            return Ok(());
        }
        let weights = match name {
            Some(n) => Some(
                self.loaded
                    .get(n)
                    .ok_or_else(|| wick::Error::InvalidArgument {
                        name: "model",
                        message: format!("adapter `{n}` is not loaded"),
                    })?,
            ),
            None => None,
        };
        for (i, (_, linear)) in model.projections_mut().into_iter().enumerate() {
            linear.take_lora()?;
            if let Some(Some(adapter)) = weights.and_then(|w| w.get(i)) {
                linear.set_lora(adapter.clone())?;
            }
        }
        self.active = name.map(str::to_string);
        Ok(())
    }
}
