//! Classifies handwritten digits with a model the host shares (`wasi:nn`):
//! each 8x8 image becomes one classification event.
//!
//! Input data: `{"pixels": [64 values, 0 to 16]}` for one image, or
//! `{"pixels": [[64 values], [64 values], ...]}` for several, which run as
//! one inference. Rows are row-major, as scikit-learn's `load_digits` has them.
//! Config:
//! - `model` (default `digits`): the model's name in the manifest;
//! - `input` / `output` (default `pixels` / `probabilities`): its tensors;
//! - `min_confidence` (default 0): below it the event type is
//!   `com.brink.digits.uncertain` instead of `com.brink.digits.classified`.
//!
//! Emits, per image, data `{"label": 7, "confidence": 0.98, "index": 0}` with
//! the input's subject.
//!
//! Grants: `models = ["digits"]` (or the configured model).

use brink_sdk::nn::{Model, Tensor, argmax};
use brink_sdk::{Error, Event, Result, config};
use serde::{Deserialize, Serialize};

/// Pixels per image.
const PIXELS: usize = 64;
/// Most images one event may carry.
const MAX_IMAGES: usize = 1024;

#[derive(Deserialize)]
#[serde(untagged)]
enum Images {
    One(Vec<f32>),
    Many(Vec<Vec<f32>>),
}

#[derive(Deserialize)]
struct Input {
    pixels: Images,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct Classification {
    pub label: usize,
    pub confidence: f32,
    pub index: usize,
}

/// The images of an event, checked, as one row-major batch.
fn rows(input: Input) -> Result<(usize, Vec<f32>)> {
    let images = match input.pixels {
        Images::One(image) => vec![image],
        Images::Many(images) => images,
    };
    if images.is_empty() || images.len() > MAX_IMAGES {
        return Err(Error::invalid_event(format!(
            "expected 1 to {MAX_IMAGES} images, got {}",
            images.len()
        )));
    }
    let mut flat = Vec::with_capacity(images.len() * PIXELS);
    for (i, image) in images.iter().enumerate() {
        if image.len() != PIXELS {
            return Err(Error::invalid_event(format!(
                "image {i} has {} pixels; an 8x8 digit has {PIXELS}",
                image.len()
            )));
        }
        if let Some(v) = image
            .iter()
            .find(|v| !v.is_finite() || **v < 0.0 || **v > 16.0)
        {
            return Err(Error::invalid_event(format!(
                "image {i} has pixel value {v}; values are 0 to 16"
            )));
        }
        flat.extend_from_slice(image);
    }
    Ok((images.len(), flat))
}

/// The label and confidence of each row of class probabilities.
fn classify(probabilities: &[f32], classes: usize) -> Vec<Classification> {
    probabilities
        .chunks(classes.max(1))
        .enumerate()
        .map(|(index, row)| {
            let (label, confidence) = argmax(row).unwrap_or((0, 0.0));
            Classification {
                label,
                confidence,
                index,
            }
        })
        .collect()
}

pub fn handle(event: Event) -> Result<Vec<Event>> {
    let model_name = config::get("model").unwrap_or_else(|| "digits".into());
    let input_name = config::get("input").unwrap_or_else(|| "pixels".into());
    let output_name = config::get("output").unwrap_or_else(|| "probabilities".into());
    let min_confidence: f32 = config::get_or("min_confidence", 0.0)?;
    let (count, pixels) = rows(event.json()?)?;
    let model = Model::open(&model_name)?;
    let batch = u32::try_from(count).map_err(|_| Error::invalid_event("too many images"))?;
    let outputs = model.infer(&[(input_name.as_str(), Tensor::f32(&[batch, 64], &pixels)?)])?;
    let probabilities = outputs.f32(&output_name)?;
    if count == 0 || probabilities.len() % count != 0 {
        return Err(Error::internal(format!(
            "model `{model_name}` returned {} values for {count} images",
            probabilities.len()
        )));
    }
    classify(&probabilities, probabilities.len() / count)
        .into_iter()
        .map(|c| {
            let ty = if c.confidence < min_confidence {
                "com.brink.digits.uncertain"
            } else {
                "com.brink.digits.classified"
            };
            let mut out = Event::new(ty, event.source.clone());
            if let Some(subject) = &event.subject {
                out = out.with_subject(subject.clone());
            }
            out.with_json(&c)
        })
        .collect()
}

brink_sdk::handler!(handle);

#[cfg(test)]
mod tests {
    use super::*;

    fn input(json: &str) -> Result<Input> {
        serde_json::from_str(json).map_err(|e| Error::invalid_event(e.to_string()))
    }

    #[test]
    fn one_image_or_many_become_one_batch() -> Result<()> {
        let one = format!("{{\"pixels\": {:?}}}", vec![1.0f32; 64]);
        assert_eq!(rows(input(&one)?)?.0, 1);
        let many = format!("{{\"pixels\": {:?}}}", vec![vec![2.0f32; 64]; 3]);
        let (count, flat) = rows(input(&many)?)?;
        assert_eq!((count, flat.len()), (3, 192));
        Ok(())
    }

    #[test]
    fn images_of_the_wrong_size_or_range_are_invalid_events() -> Result<()> {
        let short = format!("{{\"pixels\": {:?}}}", vec![1.0f32; 63]);
        assert!(rows(input(&short)?).is_err_and(|e| e.message().contains("63 pixels")));
        let bright = format!("{{\"pixels\": {:?}}}", vec![17.0f32; 64]);
        assert!(rows(input(&bright)?).is_err_and(|e| e.message().contains("0 to 16")));
        assert!(rows(input("{\"pixels\": []}")?).is_err());
        Ok(())
    }

    #[test]
    fn each_row_of_probabilities_gives_its_label_and_confidence() {
        let mut probabilities = vec![0.0f32; 20];
        probabilities[3] = 0.9;
        probabilities[17] = 0.6;
        let c = classify(&probabilities, 10);
        assert_eq!(
            c,
            vec![
                Classification {
                    label: 3,
                    confidence: 0.9,
                    index: 0
                },
                Classification {
                    label: 7,
                    confidence: 0.6,
                    index: 1
                },
            ]
        );
    }
}
