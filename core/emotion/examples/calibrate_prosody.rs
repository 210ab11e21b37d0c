//! Calibrates the prosody arousal model on the RAVDESS development subset.
//!
//! ```sh
//! cargo run -p nexus-emotion --example calibrate_prosody --release -- /work/shared/data/ravdess-dev
//! ```
//!
//! Prints each clip's features, the cross-validated accuracies (leave-one-actor-out and
//! leave-one-clip-out), and the coefficients fitted on all clips as Rust constants to paste
//! into `src/prosody/model.rs`. Options: `--l2 X` (default: the protocol's fixed value).
//! The audio is read where it lies and never copied (CC BY-NC-SA).

#[path = "../tests/support/ravdess.rs"]
mod ravdess;

use std::path::PathBuf;
use std::process::ExitCode;

use nexus_emotion::prosody::{ArousalModel, FEATURE_NAMES, model};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("calibrate_prosody: {message}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<(), String> {
    let mut dir = ravdess::default_dir();
    let mut l2 = ravdess::L2;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--l2" => {
                let value = args.next().ok_or("--l2 needs a value")?;
                l2 = value
                    .parse()
                    .map_err(|_| format!("--l2 {value:?} is not a number"))?;
            }
            _ => dir = PathBuf::from(arg),
        }
    }
    let clips = ravdess::load(&dir)?;
    print_clips(&clips);

    for (actor, baseline) in ravdess::actor_baselines(&clips) {
        if let Some(b) = baseline {
            println!(
                "actor {actor} baseline: F0 {:.1} Hz, energy {:.1} dBFS",
                b.f0_hz, b.energy_db
            );
        }
    }
    let examples = ravdess::examples(&clips);
    let highs = examples.iter().filter(|(_, high)| *high).count();
    println!(
        "\n{} clips, {} labelled: {highs} high arousal, {} low (disgust excluded); L2 = {l2}",
        clips.len(),
        examples.len(),
        examples.len() - highs
    );
    println!(
        "leave-one-actor-out accuracy: {}",
        ravdess::leave_one_actor_out(&clips, l2)
    );
    println!(
        "leave-one-clip-out accuracy:  {}",
        ravdess::leave_one_out(&clips, l2)
    );
    let fitted = ArousalModel::fit(&examples, l2).ok_or("no labelled clips")?;
    println!(
        "fit on all, training accuracy: {}",
        ravdess::score(&fitted, &clips)
    );
    println!(
        "shipped model: {} with speaker baselines, {} without",
        ravdess::score(&ArousalModel::shipped(), &clips),
        ravdess::shipped_without_baseline(&clips)
    );
    println!(
        "valence check (happy, surprised vs angry, fearful; same features): \
         leave-one-actor-out {}, leave-one-clip-out {} (chance is 50 %)",
        ravdess::leave_one_actor_out_with(&clips, l2, ravdess::valence_among_high_arousal),
        ravdess::leave_one_out_with(&clips, l2, ravdess::valence_among_high_arousal)
    );
    print_constants(&fitted);
    Ok(())
}

fn print_clips(clips: &[ravdess::Clip]) {
    println!(
        "file,emotion,intensity,actor,{},p_shipped",
        FEATURE_NAMES.join(",")
    );
    for clip in clips {
        let features = model::features(&clip.summary);
        let shown: Vec<String> = features
            .iter()
            .map(|f| f.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}")))
            .collect();
        let p = ravdess::shipped_reading(clip).arousal_probability;
        println!(
            "{},{},{},{},{},{}",
            clip.file,
            clip.emotion,
            clip.intensity,
            clip.actor,
            shown.join(","),
            p.map_or_else(|| "-".to_owned(), |p| format!("{p:.3}"))
        );
    }
}

fn print_constants(model: &ArousalModel) {
    let list = |values: &[f32]| {
        values
            .iter()
            .map(|v| format!("{v:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("\n// Paste into core/emotion/src/prosody/model.rs:");
    println!(
        "const SHIPPED_MEAN: [f32; FEATURE_COUNT] = [{}];",
        list(&model.mean)
    );
    println!(
        "const SHIPPED_SCALE: [f32; FEATURE_COUNT] = [{}];",
        list(&model.scale)
    );
    println!(
        "const SHIPPED_WEIGHTS: [f32; FEATURE_COUNT] = [{}];",
        list(&model.weights)
    );
    println!("const SHIPPED_BIAS: f32 = {:?};", model.bias);
}
