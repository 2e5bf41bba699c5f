#![allow(clippy::unwrap_used)]
use tokenizers::models::ModelWrapper;
use tokenizers::Model;
use wick::io::gguf::GgufFile;
use wick::io::gguf_tokenizer::tokenizer_from_gguf;
#[test]
fn gemma_reachable() {
    let p = testkit::paths::real_model("llama.cpp").join("vocab/ggml-vocab-gemma-4.gguf");
    let tok = tokenizer_from_gguf(&GgufFile::open(&p).unwrap()).unwrap();
    let ModelWrapper::BPE(bpe) = tok.get_model() else { panic!() };
    let mut json: serde_json::Value = serde_json::to_value(bpe).unwrap();
    json["ignore_merges"] = serde_json::Value::Bool(false);
    let s = serde_json::to_string(&json).unwrap(); let plain: tokenizers::models::bpe::BPE = serde_json::from_str(&s).unwrap();
    let vocab = bpe.get_vocab();
    let mut bad = Vec::new();
    let mut n = 0;
    for (t, id) in vocab.iter() {
        if t.contains('\n') || t.starts_with("<") { continue; }
        n += 1;
        let toks = plain.tokenize(t).unwrap();
        if toks.len() != 1 || toks[0].id != *id { bad.push((t.clone(), *id, toks.iter().map(|x| x.id).collect::<Vec<_>>())); }
    }
    println!("checked {n}, unreachable {}: {:?}", bad.len(), &bad[..bad.len().min(10)]);
}
