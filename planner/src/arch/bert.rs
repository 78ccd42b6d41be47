//! BERT (`bert`).
//!
//! The encoder stores `embeddings.{word_embeddings, position_embeddings,
//! token_type_embeddings}.weight` and `embeddings.LayerNorm`, then per layer
//! `encoder.layer.N.attention.self.{query,key,value}`, `attention.output.dense`,
//! `attention.output.LayerNorm`, `intermediate.dense`, `output.dense`, `output.LayerNorm`,
//! then `pooler.dense` where the class has a pooler.
//!
//! Names follow what each class's `save_pretrained` writes: the bare `BertModel` (the default
//! when `architectures` is absent, as `AutoModel` loads it) has no prefix, as in
//! sentence-embedding checkpoints; every `BertFor*` class prefixes the encoder with `bert.`.
//! The pooler exists where transformers builds it: `BertModel`, `BertForPreTraining`,
//! `BertForNextSentencePrediction`, `BertForSequenceClassification` and
//! `BertForMultipleChoice`; `BertForMaskedLM`, `BertLMHeadModel`, `BertForTokenClassification`
//! and `BertForQuestionAnswering` pass `add_pooling_layer=False`.
//!
//! The masked-LM head `cls.predictions` is `transform.dense`, `transform.LayerNorm`,
//! `decoder.weight` (tied to the word embeddings unless `tie_word_embeddings` is false),
//! `bias`, and `decoder.bias`, which is always the same tensor as `bias`.
//!
//! `bert-base-uncased` declares `BertForMaskedLM` but its checkpoint was saved from
//! `BertForPreTraining`: it also stores `bert.pooler` and `cls.seq_relationship`, which
//! `BertForMaskedLM` does not load and this list does not include. Old checkpoints name
//! LayerNorm parameters `gamma`/`beta`; transformers renames them to `weight`/`bias` on load,
//! and so are they named here.

use serde_json::Value;

use super::builder::Tensors;
use super::fields::Fields;
use crate::config::ModelConfig;
use crate::dtype::DType;
use crate::error::Result;
use crate::tensor::TensorInfo;

/// What a head class adds to the encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head {
    /// Whether the encoder's names start with `bert.`.
    prefixed: bool,
    /// Whether the encoder has `pooler.dense`.
    pooler: bool,
    /// Whether there is the masked-LM head `cls.predictions`.
    masked_lm: bool,
    /// Whether there is the next-sentence head `cls.seq_relationship`.
    next_sentence: bool,
    /// A linear classifier on top: its name and its width (`None` for `num_labels`).
    classifier: Option<(&'static str, Option<u64>)>,
}

const BASE: &str = "BertModel";

/// The head classes, with what each one adds.
const HEADS: [(&str, Head); 9] = {
    const fn head(prefixed: bool, pooler: bool, masked_lm: bool, next_sentence: bool) -> Head {
        Head {
            prefixed,
            pooler,
            masked_lm,
            next_sentence,
            classifier: None,
        }
    }
    const fn classifier(pooler: bool, name: &'static str, width: Option<u64>) -> Head {
        Head {
            classifier: Some((name, width)),
            ..head(true, pooler, false, false)
        }
    }
    [
        (BASE, head(false, true, false, false)),
        ("BertForPreTraining", head(true, true, true, true)),
        ("BertForMaskedLM", head(true, false, true, false)),
        ("BertLMHeadModel", head(true, false, true, false)),
        (
            "BertForNextSentencePrediction",
            head(true, true, false, true),
        ),
        (
            "BertForSequenceClassification",
            classifier(true, "classifier", None),
        ),
        (
            "BertForMultipleChoice",
            classifier(true, "classifier", Some(1)),
        ),
        (
            "BertForTokenClassification",
            classifier(false, "classifier", None),
        ),
        (
            "BertForQuestionAnswering",
            classifier(false, "qa_outputs", None),
        ),
    ]
};

impl Head {
    fn read(f: Fields) -> Result<Head> {
        let class = f.architecture().unwrap_or(BASE);
        HEADS
            .iter()
            .find(|(name, _)| *name == class)
            .map(|&(_, head)| head)
            .ok_or_else(|| {
                let known: Vec<&str> = HEADS.iter().map(|(name, _)| *name).collect();
                f.unknown_head(class, &known)
            })
    }

    fn prefix(self) -> &'static str {
        if self.prefixed { "bert." } else { "" }
    }
}

/// `num_labels`: the size of `id2label` when given (as transformers derives it), else the
/// `num_labels` field, else 2.
fn num_labels(f: Fields) -> Result<u64> {
    match f.0.raw.get("id2label") {
        Some(Value::Object(labels)) if !labels.is_empty() => Ok(labels.len() as u64),
        _ => f.dim_or("num_labels", 2),
    }
}

/// The tensors of a BERT checkpoint, in execution order.
pub(super) fn expand(config: &ModelConfig, dtype: Option<DType>) -> Result<Vec<TensorInfo>> {
    let f = Fields(config);
    let hidden = f.dim("hidden_size")?;
    let heads = f.dim("num_attention_heads")?;
    let head_size = f.split("hidden_size", hidden, "num_attention_heads", heads)?;
    let layers = f.dim("num_hidden_layers")?;
    let intermediate = f.dim("intermediate_size")?;
    let vocab = f.dim("vocab_size")?;
    let positions = f.dim("max_position_embeddings")?;
    let token_types = f.dim_or("type_vocab_size", 2)?;
    let relative = match f.text_or("position_embedding_type", "absolute")? {
        "absolute" => false,
        "relative_key" | "relative_key_query" => true,
        other => {
            return Err(f.invalid(format!(
                "field `position_embedding_type` is `{other}`; expected `absolute`, \
                 `relative_key` or `relative_key_query`"
            )));
        }
    };
    let head = Head::read(f)?;
    let tied = f.tied(true)?;

    let p = head.prefix();
    let word = format!("{p}embeddings.word_embeddings.weight");
    let mut t = Tensors::new(config, dtype);
    t.push(word.as_str(), &[vocab, hidden])?;
    t.push(
        format!("{p}embeddings.position_embeddings.weight"),
        &[positions, hidden],
    )?;
    t.push(
        format!("{p}embeddings.token_type_embeddings.weight"),
        &[token_types, hidden],
    )?;
    t.norm(&format!("{p}embeddings.LayerNorm"), hidden, true)?;
    for i in 0..layers {
        let l = format!("{p}encoder.layer.{i}");
        t.linear(&format!("{l}.attention.self.query"), hidden, hidden, true)?;
        t.linear(&format!("{l}.attention.self.key"), hidden, hidden, true)?;
        t.linear(&format!("{l}.attention.self.value"), hidden, hidden, true)?;
        if relative {
            let distances = f.mul("2 × `max_position_embeddings`", 2, positions)? - 1;
            t.push(
                format!("{l}.attention.self.distance_embedding.weight"),
                &[distances, head_size],
            )?;
        }
        t.linear(&format!("{l}.attention.output.dense"), hidden, hidden, true)?;
        t.norm(&format!("{l}.attention.output.LayerNorm"), hidden, true)?;
        t.linear(
            &format!("{l}.intermediate.dense"),
            intermediate,
            hidden,
            true,
        )?;
        t.linear(&format!("{l}.output.dense"), hidden, intermediate, true)?;
        t.norm(&format!("{l}.output.LayerNorm"), hidden, true)?;
    }
    if head.pooler {
        t.linear(&format!("{p}pooler.dense"), hidden, hidden, true)?;
    }
    if head.masked_lm {
        t.linear("cls.predictions.transform.dense", hidden, hidden, true)?;
        t.norm("cls.predictions.transform.LayerNorm", hidden, true)?;
        if tied {
            t.tied("cls.predictions.decoder.weight", &[vocab, hidden], &word)?;
        } else {
            t.push("cls.predictions.decoder.weight", &[vocab, hidden])?;
        }
        t.push("cls.predictions.bias", &[vocab])?;
        t.tied(
            "cls.predictions.decoder.bias",
            &[vocab],
            "cls.predictions.bias",
        )?;
    }
    if head.next_sentence {
        t.linear("cls.seq_relationship", 2, hidden, true)?;
    }
    if let Some((name, width)) = head.classifier {
        let width = match width {
            Some(w) => w,
            None => num_labels(f)?,
        };
        t.linear(name, width, hidden, true)?;
    }
    Ok(t.finish())
}

/// The masked-LM decoder's ties: its weight to the word embeddings (unless the config unties
/// them) and its bias to `cls.predictions.bias` (always).
pub(super) fn tied_pairs(config: &ModelConfig) -> Vec<(String, String)> {
    let f = Fields(config);
    let Ok(head) = Head::read(f) else {
        return Vec::new();
    };
    let mut pairs = Vec::new();
    if head.masked_lm {
        if f.tied(true).unwrap_or(true) {
            let word = format!("{}embeddings.word_embeddings.weight", head.prefix());
            pairs.push(("cls.predictions.decoder.weight".into(), word));
        }
        pairs.push((
            "cls.predictions.decoder.bias".into(),
            "cls.predictions.bias".into(),
        ));
    }
    pairs
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::testing::{check, load, params, parse};
    use super::*;

    const ENCODER_WITHOUT_POOLER: u64 = 108_891_648;
    const POOLER: u64 = 768 * 768 + 768;
    const MLM_HEAD: u64 = (768 * 768 + 768) + 2 * 768 + 30_522;

    fn with_architecture(class: &str) -> ModelConfig {
        let mut c = load("bert-base-uncased.json");
        c.raw.insert("architectures".into(), json!([class]));
        c
    }

    #[test]
    fn bert_base_uncased_as_masked_lm() {
        let c = load("bert-base-uncased.json");
        assert_eq!(c.architecture(), Some("BertForMaskedLM"));
        let ts = expand(&c, None).unwrap();
        assert_eq!(params(&ts), 109_514_298);
        assert_eq!(params(&ts), ENCODER_WITHOUT_POOLER + MLM_HEAD);
        check(&c, &ts, &[("bert.encoder.layer.", 12)]);
        assert!(
            !ts.iter().any(|t| t.name.contains("pooler")),
            "BertForMaskedLM has no pooler"
        );
        let tail: Vec<(&str, Option<&str>)> = ts[ts.len() - 7..]
            .iter()
            .map(|t| (t.name.as_str(), t.tied_to.as_deref()))
            .collect();
        assert_eq!(
            tail,
            [
                ("cls.predictions.transform.dense.weight", None),
                ("cls.predictions.transform.dense.bias", None),
                ("cls.predictions.transform.LayerNorm.weight", None),
                ("cls.predictions.transform.LayerNorm.bias", None),
                (
                    "cls.predictions.decoder.weight",
                    Some("bert.embeddings.word_embeddings.weight")
                ),
                ("cls.predictions.bias", None),
                ("cls.predictions.decoder.bias", Some("cls.predictions.bias")),
            ]
        );
        assert_eq!(
            ts[0].dtype,
            DType::F32,
            "bert-base-uncased declares no torch_dtype"
        );
    }

    #[test]
    fn bert_base_uncased_as_bare_model_has_the_published_count() {
        let c = with_architecture("BertModel");
        let ts = expand(&c, None).unwrap();
        assert_eq!(params(&ts), 109_482_240);
        assert_eq!(params(&ts), ENCODER_WITHOUT_POOLER + POOLER);
        assert_eq!(ts[0].name, "embeddings.word_embeddings.weight");
        assert_eq!(ts.last().unwrap().name, "pooler.dense.bias");
        assert!(ts.iter().all(|t| t.tied_to.is_none()));
        check(&c, &ts, &[("encoder.layer.", 12)]);
        let names: Vec<&str> = ts[4..12].iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "embeddings.LayerNorm.bias",
                "encoder.layer.0.attention.self.query.weight",
                "encoder.layer.0.attention.self.query.bias",
                "encoder.layer.0.attention.self.key.weight",
                "encoder.layer.0.attention.self.key.bias",
                "encoder.layer.0.attention.self.value.weight",
                "encoder.layer.0.attention.self.value.bias",
                "encoder.layer.0.attention.output.dense.weight",
            ]
        );
    }

    #[test]
    fn other_heads() {
        let cases = [
            ("BertForPreTraining", 110_106_428),
            ("BertForNextSentencePrediction", 109_482_240 + 2 * 768 + 2),
            ("BertForSequenceClassification", 109_482_240 + 2 * 768 + 2),
            ("BertForMultipleChoice", 109_482_240 + 768 + 1),
            (
                "BertForTokenClassification",
                ENCODER_WITHOUT_POOLER + 2 * 768 + 2,
            ),
            (
                "BertForQuestionAnswering",
                ENCODER_WITHOUT_POOLER + 2 * 768 + 2,
            ),
        ];
        for (class, count) in cases {
            let c = with_architecture(class);
            let ts = expand(&c, None).unwrap();
            assert_eq!(params(&ts), count, "{class}");
            check(&c, &ts, &[("bert.encoder.layer.", 12)]);
        }
        let mut c = with_architecture("BertForTokenClassification");
        c.raw.insert(
            "id2label".into(),
            json!({"0": "O", "1": "B-PER", "2": "I-PER"}),
        );
        let ts = expand(&c, None).unwrap();
        assert_eq!(ts.last().unwrap().shape, [3]);
    }

    #[test]
    fn untied_decoder_and_relative_positions() {
        let c = parse(
            r#"{"model_type":"bert","architectures":["BertForMaskedLM"],"hidden_size":64,
            "num_attention_heads":4,"num_hidden_layers":3,"intermediate_size":128,
            "vocab_size":100,"max_position_embeddings":32,"tie_word_embeddings":false,
            "position_embedding_type":"relative_key"}"#,
        );
        let ts = expand(&c, None).unwrap();
        let decoder = ts
            .iter()
            .find(|t| t.name == "cls.predictions.decoder.weight")
            .unwrap();
        assert_eq!(decoder.tied_to, None);
        let distance = ts
            .iter()
            .find(|t| t.name == "bert.encoder.layer.2.attention.self.distance_embedding.weight")
            .unwrap();
        assert_eq!(distance.shape, [63, 16]);
        check(&c, &ts, &[("bert.encoder.layer.", 3)]);

        let bad = parse(
            r#"{"model_type":"bert","hidden_size":64,"num_attention_heads":4,
            "num_hidden_layers":3,"intermediate_size":128,"vocab_size":100,
            "max_position_embeddings":32,"position_embedding_type":"rotary"}"#,
        );
        let msg = expand(&bad, None).unwrap_err().to_string();
        assert!(msg.contains("position_embedding_type") && msg.contains("test/config.json"));
    }
}
