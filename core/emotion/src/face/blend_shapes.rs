//! The 52 ARKit blend-shape locations (`ARFaceAnchor.BlendShapeLocation`) and their names.
//!
//! Each location has two spellings in the wild: the Swift/Objective-C constant name
//! (`mouthSmileLeft`, also used by MediaPipe's face landmarker and Unity/Unreal) and the
//! `rawValue` string ARKit puts in `ARFaceAnchor.blendShapes` (`mouthSmile_L`). Both are
//! accepted, case-insensitively. "Left"/"Right" are the user's own left and right as ARKit
//! defines them.

use serde::{Deserialize, Serialize};

macro_rules! blend_shapes {
    ($($variant:ident => $name:literal, $raw:literal;)*) => {
        /// One ARKit blend-shape location.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub enum BlendShape {
            $(
                #[doc = concat!("`", $name, "` (ARKit raw value `", $raw, "`).")]
                $variant,
            )*
        }

        impl BlendShape {
            /// All 52 locations, in ARKit's documentation order.
            pub const ALL: [BlendShape; 52] = [$(BlendShape::$variant),*];

            /// The Swift constant name, e.g. `mouthSmileLeft`.
            pub fn name(self) -> &'static str {
                match self {
                    $(BlendShape::$variant => $name,)*
                }
            }

            /// ARKit's `rawValue` string, e.g. `mouthSmile_L`.
            pub fn arkit_raw_value(self) -> &'static str {
                match self {
                    $(BlendShape::$variant => $raw,)*
                }
            }
        }
    };
}

blend_shapes! {
    EyeBlinkLeft => "eyeBlinkLeft", "eyeBlink_L";
    EyeLookDownLeft => "eyeLookDownLeft", "eyeLookDown_L";
    EyeLookInLeft => "eyeLookInLeft", "eyeLookIn_L";
    EyeLookOutLeft => "eyeLookOutLeft", "eyeLookOut_L";
    EyeLookUpLeft => "eyeLookUpLeft", "eyeLookUp_L";
    EyeSquintLeft => "eyeSquintLeft", "eyeSquint_L";
    EyeWideLeft => "eyeWideLeft", "eyeWide_L";
    EyeBlinkRight => "eyeBlinkRight", "eyeBlink_R";
    EyeLookDownRight => "eyeLookDownRight", "eyeLookDown_R";
    EyeLookInRight => "eyeLookInRight", "eyeLookIn_R";
    EyeLookOutRight => "eyeLookOutRight", "eyeLookOut_R";
    EyeLookUpRight => "eyeLookUpRight", "eyeLookUp_R";
    EyeSquintRight => "eyeSquintRight", "eyeSquint_R";
    EyeWideRight => "eyeWideRight", "eyeWide_R";
    JawForward => "jawForward", "jawForward";
    JawLeft => "jawLeft", "jawLeft";
    JawRight => "jawRight", "jawRight";
    JawOpen => "jawOpen", "jawOpen";
    MouthClose => "mouthClose", "mouthClose";
    MouthFunnel => "mouthFunnel", "mouthFunnel";
    MouthPucker => "mouthPucker", "mouthPucker";
    MouthLeft => "mouthLeft", "mouthLeft";
    MouthRight => "mouthRight", "mouthRight";
    MouthSmileLeft => "mouthSmileLeft", "mouthSmile_L";
    MouthSmileRight => "mouthSmileRight", "mouthSmile_R";
    MouthFrownLeft => "mouthFrownLeft", "mouthFrown_L";
    MouthFrownRight => "mouthFrownRight", "mouthFrown_R";
    MouthDimpleLeft => "mouthDimpleLeft", "mouthDimple_L";
    MouthDimpleRight => "mouthDimpleRight", "mouthDimple_R";
    MouthStretchLeft => "mouthStretchLeft", "mouthStretch_L";
    MouthStretchRight => "mouthStretchRight", "mouthStretch_R";
    MouthRollLower => "mouthRollLower", "mouthRollLower";
    MouthRollUpper => "mouthRollUpper", "mouthRollUpper";
    MouthShrugLower => "mouthShrugLower", "mouthShrugLower";
    MouthShrugUpper => "mouthShrugUpper", "mouthShrugUpper";
    MouthPressLeft => "mouthPressLeft", "mouthPress_L";
    MouthPressRight => "mouthPressRight", "mouthPress_R";
    MouthLowerDownLeft => "mouthLowerDownLeft", "mouthLowerDown_L";
    MouthLowerDownRight => "mouthLowerDownRight", "mouthLowerDown_R";
    MouthUpperUpLeft => "mouthUpperUpLeft", "mouthUpperUp_L";
    MouthUpperUpRight => "mouthUpperUpRight", "mouthUpperUp_R";
    BrowDownLeft => "browDownLeft", "browDown_L";
    BrowDownRight => "browDownRight", "browDown_R";
    BrowInnerUp => "browInnerUp", "browInnerUp";
    BrowOuterUpLeft => "browOuterUpLeft", "browOuterUp_L";
    BrowOuterUpRight => "browOuterUpRight", "browOuterUp_R";
    CheekPuff => "cheekPuff", "cheekPuff";
    CheekSquintLeft => "cheekSquintLeft", "cheekSquint_L";
    CheekSquintRight => "cheekSquintRight", "cheekSquint_R";
    NoseSneerLeft => "noseSneerLeft", "noseSneer_L";
    NoseSneerRight => "noseSneerRight", "noseSneer_R";
    TongueOut => "tongueOut", "tongueOut";
}

impl BlendShape {
    /// Position in [`BlendShape::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Looks a name up: the constant name or the ARKit raw value, ignoring ASCII case.
    pub fn from_name(name: &str) -> Option<Self> {
        let name = name.trim();
        Self::ALL.into_iter().find(|shape| {
            shape.name().eq_ignore_ascii_case(name)
                || shape.arkit_raw_value().eq_ignore_ascii_case(name)
        })
    }
}

/// Coefficients of the blend shapes that were given (0..1; `None` when absent).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlendShapes {
    values: [Option<f32>; 52],
}

impl Default for BlendShapes {
    fn default() -> Self {
        Self { values: [None; 52] }
    }
}

impl BlendShapes {
    /// The coefficient of `shape`, if given.
    pub fn get(&self, shape: BlendShape) -> Option<f32> {
        self.values[shape.index()]
    }

    /// Sets a coefficient; the caller guarantees `0..=1` (use [`FaceInput`](super::FaceInput)
    /// for unchecked values).
    pub(crate) fn set(&mut self, shape: BlendShape, value: f32) {
        self.values[shape.index()] = Some(value);
    }

    /// How many shapes were given.
    pub fn known(&self) -> usize {
        self.values.iter().flatten().count()
    }

    /// The given shapes and their values, in [`BlendShape::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (BlendShape, f32)> + '_ {
        BlendShape::ALL
            .into_iter()
            .filter_map(|shape| self.get(shape).map(|v| (shape, v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifty_two_distinct_names() {
        let mut names: Vec<&str> = BlendShape::ALL.iter().map(|s| s.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 52);
        for (i, shape) in BlendShape::ALL.into_iter().enumerate() {
            assert_eq!(shape.index(), i);
            assert_eq!(BlendShape::from_name(shape.name()), Some(shape));
            assert_eq!(BlendShape::from_name(shape.arkit_raw_value()), Some(shape));
        }
    }

    #[test]
    fn name_spellings() {
        assert_eq!(
            BlendShape::from_name("mouthSmile_L"),
            Some(BlendShape::MouthSmileLeft)
        );
        assert_eq!(
            BlendShape::from_name("MouthSmileRight"),
            Some(BlendShape::MouthSmileRight)
        );
        assert_eq!(
            BlendShape::from_name(" jawOpen "),
            Some(BlendShape::JawOpen)
        );
        assert_eq!(BlendShape::from_name("mouthSmile"), None);
        assert_eq!(BlendShape::from_name("_neutral"), None);
        assert_eq!(BlendShape::from_name(""), None);
    }
}
