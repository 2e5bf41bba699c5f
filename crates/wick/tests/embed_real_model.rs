//! all-MiniLM-L6-v2 (real weights, fetched by scripts/fetch-models.sh) against
//! sentence-transformers' vectors stored by fixtures/minilm_embeddings/gen.py.

#![allow(clippy::unwrap_used)] // tests may panic on unexpected errors

use candle_core::{DType, Device};
use testkit::compare::{assert_close, cosine};
use testkit::paths::{fixture, minilm};
use wick::embed::{EmbedOptions, Embedder};
use wick::io::safetensors::SafetensorsWeights;
use wick::io::ModelFiles;

fn embedder() -> Embedder {
    let files = ModelFiles::resolve(minilm().to_str().unwrap()).unwrap();
    Embedder::load(&files, &Device::Cpu, DType::F32, None).unwrap()
}

fn opts(batch_size: usize) -> EmbedOptions {
    EmbedOptions {
        batch_size,
        ..Default::default()
    }
}

struct Golden {
    texts: Vec<String>,
    vectors: Vec<Vec<f32>>,
    token_counts: Vec<i64>,
}

fn golden() -> Golden {
    let dir = fixture("minilm_embeddings");
    let texts: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("texts.json")).unwrap()).unwrap();
    let st = SafetensorsWeights::open(&[dir.join("expected.safetensors")]).unwrap();
    let n = texts.len();
    let vectors = st
        .load("embeddings", &[n, 384], DType::F32, &Device::Cpu)
        .unwrap()
        .to_vec2()
        .unwrap();
    let token_counts = st
        .load("token_counts", &[n], DType::I64, &Device::Cpu)
        .unwrap()
        .to_vec1()
        .unwrap();
    Golden {
        texts,
        vectors,
        token_counts,
    }
}

#[test]
fn matches_sentence_transformers_on_varied_texts() {
    let g = golden();
    assert!(g.texts.len() >= 20, "fixture must hold at least 20 texts");
    let refs: Vec<&str> = g.texts.iter().map(String::as_str).collect();
    let got = embedder().embed(&refs, &opts(8)).unwrap();
    let mut worst = (f64::INFINITY, 0);
    for (i, (a, e)) in got.iter().zip(&g.vectors).enumerate() {
        let c = cosine(a, e);
        if c < worst.0 {
            worst = (c, i);
        }
    }
    println!(
        "{} texts; worst cosine {:.12} (1 - cos = {:.1e}) at text {} ({:?})",
        refs.len(),
        worst.0,
        1.0 - worst.0,
        worst.1,
        refs[worst.1]
    );
    for (i, (a, e)) in got.iter().zip(&g.vectors).enumerate() {
        let c = cosine(a, e);
        assert!(
            c >= 0.99999,
            "text {i} {:?}: cosine {c:.8} < 0.99999",
            refs[i]
        );
        assert_close(&format!("text {i}"), a, e, 1e-4, 0.0);
    }
}

#[test]
fn truncates_and_counts_tokens_like_sentence_transformers() {
    let g = golden();
    let refs: Vec<&str> = g.texts.iter().map(String::as_str).collect();
    let e = embedder();
    assert_eq!(
        e.max_length(),
        256,
        "max_seq_length from sentence_bert_config.json"
    );
    let counts = e.token_counts(&refs).unwrap();
    let expected: Vec<usize> = g.token_counts.iter().map(|&c| c as usize).collect();
    assert_eq!(counts, expected);
    assert!(
        counts.contains(&256),
        "the fixture's long text must hit the limit"
    );
    // The shipped tokenizer.json pads to 128; ours must not.
    assert_eq!(e.token_counts(&[""]).unwrap(), vec![2]);
}

#[test]
fn reference_sentence_pair_cosine() {
    let v = embedder()
        .embed(
            &["A man is eating food.", "A man is eating a piece of bread."],
            &opts(32),
        )
        .unwrap();
    let c = cosine(&v[0], &v[1]);
    println!("cos = {c:.6}");
    assert!((c - 0.7553).abs() <= 1e-4, "cos = {c}");
}

#[test]
fn batch_size_and_order_do_not_change_vectors() {
    let g = golden();
    let refs: Vec<&str> = g.texts.iter().map(String::as_str).collect();
    let e = embedder();
    let one_by_one = e.embed(&refs, &opts(1)).unwrap();

    // A fixed shuffle, embedded at batch 32: results must come back in the shuffled input order.
    let mut perm: Vec<usize> = (0..refs.len()).collect();
    perm.sort_by_key(|&i| (i * 7919) % 31);
    let shuffled: Vec<&str> = perm.iter().map(|&i| refs[i]).collect();
    let batched = e.embed(&shuffled, &opts(32)).unwrap();
    for (pos, &i) in perm.iter().enumerate() {
        assert_close(
            &format!("text {i}"),
            &batched[pos],
            &one_by_one[i],
            1e-5,
            0.0,
        );
    }
}

#[test]
fn normalisation_follows_the_model_and_can_be_turned_off() {
    let e = embedder();
    assert!(e.pooling().normalize, "modules.json has a Normalize module");
    let on = e.embed(&["norms"], &opts(1)).unwrap();
    let off = e
        .embed(
            &["norms"],
            &EmbedOptions {
                batch_size: 1,
                normalize: Some(false),
                prefix: None,
            },
        )
        .unwrap();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm(&on[0]) - 1.0).abs() < 1e-5);
    assert!(
        (norm(&off[0]) - 1.0).abs() > 1e-2,
        "unnormalised mean pooling is not unit length"
    );
    assert!(cosine(&on[0], &off[0]) > 0.99999);
}
