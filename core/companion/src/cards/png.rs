//! PNG at the chunk level: read the `tEXt` chunks that carry a card, and rewrite a PNG with new
//! card chunks while copying every other chunk byte for byte.
//!
//! Why our own reader instead of a crate: the `png` crate decodes `tEXt` chunks but can only
//! *write* a PNG by re-encoding the pixels, which would change the image bytes (the card must
//! keep the original image data exactly). `img-parts` does chunk-level editing (and verifies
//! CRCs), but it brings its own buffer type and error model for what is, in PNG, a very small
//! format: an 8-byte signature, then `length (u32 BE) | type (4 ASCII letters) | data | CRC-32`
//! records. Doing it here keeps the limits explicit and fuzzed with the rest of the card parser:
//! every declared length is checked against the bytes that are actually there before anything is
//! sliced (nothing is ever allocated from a declared size), every CRC is verified, chunks are
//! iterated lazily (no per-chunk allocation), and the first chunk must be `IHDR` and the last
//! `IEND`. The `png` crate is still used to *encode* the generated placeholder image.

use crate::cards::CardError;

/// The 8 bytes every PNG file starts with.
pub const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];

/// The largest chunk length the PNG specification allows (2^31 - 1).
const MAX_CHUNK_LEN: u32 = 0x7fff_ffff;

/// `tEXt` keywords that hold character cards (replaced on export, removed from stored avatars).
pub const CARD_KEYWORDS: [&str; 2] = ["chara", "ccv3"];

/// One chunk of a PNG, borrowed from the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk<'a> {
    /// Chunk type, e.g. `*b"IHDR"`.
    pub kind: [u8; 4],
    /// The chunk's data (without length, type and CRC).
    pub data: &'a [u8],
    /// The whole chunk as stored: length, type, data and CRC.
    pub raw: &'a [u8],
}

impl<'a> Chunk<'a> {
    /// `(keyword, text)` if this is a well-formed `tEXt` chunk (keyword of 1 to 79 bytes, a NUL
    /// separator, then the text, which PNG defines as Latin-1).
    pub fn text(&self) -> Option<(&'a [u8], &'a [u8])> {
        if &self.kind != b"tEXt" {
            return None;
        }
        let nul = self.data.iter().position(|&b| b == 0)?;
        let (keyword, rest) = self.data.split_at(nul);
        ((1..=79).contains(&keyword.len())).then(|| (keyword, &rest[1..]))
    }

    /// Whether this is a `tEXt` chunk holding a character card.
    pub fn is_card_text(&self) -> bool {
        self.text()
            .is_some_and(|(k, _)| CARD_KEYWORDS.iter().any(|c| c.as_bytes() == k))
    }
}

/// A lazy iterator over the chunks of a PNG that validates as it goes. It yields an error (and
/// then stops) at the first problem; after `IEND` it stops, ignoring any trailing bytes.
#[derive(Debug, Clone)]
pub struct Chunks<'a> {
    rest: &'a [u8],
    index: usize,
    done: bool,
}

/// Starts reading the chunks of `png`, which must begin with the PNG signature.
pub fn chunks(png: &[u8]) -> Result<Chunks<'_>, CardError> {
    let rest = png
        .strip_prefix(&SIGNATURE)
        .ok_or_else(|| CardError::Png("the file does not start with the PNG signature".into()))?;
    Ok(Chunks {
        rest,
        index: 0,
        done: false,
    })
}

impl<'a> Chunks<'a> {
    fn fail(&mut self, message: String) -> Option<Result<Chunk<'a>, CardError>> {
        self.done = true;
        Some(Err(CardError::Png(message)))
    }
}

impl<'a> Iterator for Chunks<'a> {
    type Item = Result<Chunk<'a>, CardError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let rest = self.rest;
        if rest.len() < 12 {
            return self.fail(if rest.is_empty() {
                "the image ends without an IEND chunk (truncated file?)".into()
            } else {
                format!(
                    "the image is truncated: {} stray byte(s) where a chunk should start",
                    rest.len()
                )
            });
        }
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let kind = [rest[4], rest[5], rest[6], rest[7]];
        if !kind.iter().all(u8::is_ascii_alphabetic) {
            return self.fail(format!(
                "chunk {} has an invalid type {:?}",
                self.index,
                String::from_utf8_lossy(&kind)
            ));
        }
        let name = String::from_utf8_lossy(&kind).into_owned();
        if len > MAX_CHUNK_LEN {
            return self.fail(format!(
                "chunk {name} declares {len} bytes, more than PNG allows"
            ));
        }
        // `len <= 2^31 - 1`, so the sum cannot overflow a usize on 32- or 64-bit targets.
        let total = len as usize + 12;
        if total > rest.len() {
            return self.fail(format!(
                "chunk {name} declares {len} bytes but only {} remain (truncated file?)",
                rest.len().saturating_sub(12)
            ));
        }
        let (raw, tail) = rest.split_at(total);
        let data = &raw[8..total - 4];
        let stored = u32::from_be_bytes([
            raw[total - 4],
            raw[total - 3],
            raw[total - 2],
            raw[total - 1],
        ]);
        if stored != crc(&kind, data) {
            return self.fail(format!("chunk {name} is damaged (CRC mismatch)"));
        }
        if self.index == 0 && &kind != b"IHDR" {
            return self.fail(format!("the first chunk is {name}, not IHDR"));
        }
        self.index += 1;
        self.rest = tail;
        if &kind == b"IEND" {
            self.done = true;
        }
        Some(Ok(Chunk { kind, data, raw }))
    }
}

/// CRC-32 of a chunk's type and data, as stored after the data.
pub fn crc(kind: &[u8; 4], data: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(kind);
    h.update(data);
    h.finalize()
}

/// Appends one chunk (length, type, data, CRC) to `out`.
pub fn write_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) -> Result<(), CardError> {
    let len = u32::try_from(data.len())
        .ok()
        .filter(|&l| l <= MAX_CHUNK_LEN)
        .ok_or_else(|| CardError::Write(format!("a PNG chunk of {} bytes", data.len())))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    out.extend_from_slice(&crc(kind, data).to_be_bytes());
    Ok(())
}

/// The `tEXt` chunks of a card in `png`: `(keyword, text)` for the keywords in
/// [`CARD_KEYWORDS`], in file order. Validates the whole file (every CRC, up to `IEND`).
pub fn card_texts(png: &[u8]) -> Result<Vec<(&'static str, &[u8])>, CardError> {
    let mut found = Vec::new();
    for chunk in chunks(png)? {
        let chunk = chunk?;
        if let Some((keyword, text)) = chunk.text()
            && let Some(k) = CARD_KEYWORDS.iter().find(|k| k.as_bytes() == keyword)
        {
            found.push((*k, text));
        }
    }
    Ok(found)
}

/// A copy of `png` without card chunks and with `texts` (`(keyword, text)`) inserted as `tEXt`
/// chunks right before `IEND`, as SillyTavern writes them. Every other chunk is copied byte for
/// byte, so the image data is unchanged; anything after `IEND` is dropped.
pub fn with_texts(png: &[u8], texts: &[(&str, &[u8])]) -> Result<Vec<u8>, CardError> {
    let extra: usize = texts.iter().map(|(k, t)| k.len() + 1 + t.len() + 12).sum();
    let mut out = Vec::with_capacity(png.len().saturating_add(extra));
    out.extend_from_slice(&SIGNATURE);
    for chunk in chunks(png)? {
        let chunk = chunk?;
        if chunk.is_card_text() {
            continue;
        }
        if &chunk.kind == b"IEND" {
            for (keyword, text) in texts {
                let mut data = Vec::with_capacity(keyword.len() + 1 + text.len());
                data.extend_from_slice(keyword.as_bytes());
                data.push(0);
                data.extend_from_slice(text);
                write_chunk(&mut out, b"tEXt", &data)?;
            }
        }
        out.extend_from_slice(chunk.raw);
    }
    Ok(out)
}

/// A copy of `png` without its card chunks (`chara`, `ccv3`): what is kept as the avatar.
pub fn without_card(png: &[u8]) -> Result<Vec<u8>, CardError> {
    with_texts(png, &[])
}

/// Width of the generated placeholder image.
pub const PLACEHOLDER_WIDTH: u32 = 400;
/// Height of the generated placeholder image.
pub const PLACEHOLDER_HEIGHT: u32 = 600;

/// A plain 400x600 PNG in one calm color picked from `seed` (the companion's name), used as the
/// card image when a companion has no avatar.
pub fn placeholder(seed: &str) -> Result<Vec<u8>, CardError> {
    // FNV-1a of the seed picks one of a few muted colors: stable across runs and platforms.
    let hash = seed.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    const COLORS: [[u8; 3]; 6] = [
        [0x5b, 0x7d, 0xb1],
        [0x6a, 0x9f, 0x8e],
        [0xa7, 0x7b, 0xb5],
        [0xc0, 0x8a, 0x5b],
        [0x7a, 0x86, 0x9a],
        [0xb5, 0x6b, 0x7b],
    ];
    let color = COLORS[(hash % COLORS.len() as u64) as usize];
    let mut out = Vec::new();
    let write_err = |e: png::EncodingError| CardError::Write(format!("placeholder image: {e}"));
    {
        let mut encoder = png::Encoder::new(&mut out, PLACEHOLDER_WIDTH, PLACEHOLDER_HEIGHT);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(write_err)?;
        let pixels: Vec<u8> = color
            .iter()
            .copied()
            .cycle()
            .take((PLACEHOLDER_WIDTH * PLACEHOLDER_HEIGHT * 3) as usize)
            .collect();
        writer.write_image_data(&pixels).map_err(write_err)?;
        writer.finish().map_err(write_err)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_png() -> Vec<u8> {
        placeholder("Ada").expect("placeholder")
    }

    #[test]
    fn the_placeholder_is_a_valid_png_of_the_right_size() {
        let png_bytes = tiny_png();
        let decoder = png::Decoder::new(std::io::Cursor::new(&png_bytes));
        let reader = decoder.read_info().expect("decodes");
        assert_eq!(
            (reader.info().width, reader.info().height),
            (PLACEHOLDER_WIDTH, PLACEHOLDER_HEIGHT)
        );
        assert!(png_bytes.len() < 10_000, "a solid color compresses well");
        assert_eq!(placeholder("Ada").expect("again"), png_bytes, "stable");
    }

    #[test]
    fn text_chunks_are_inserted_before_iend_and_the_rest_is_copied_byte_for_byte() {
        let original = tiny_png();
        let out = with_texts(&original, &[("chara", b"djI="), ("ccv3", b"djM=")]).expect("write");
        let kinds: Vec<[u8; 4]> = chunks(&out)
            .expect("sig")
            .map(|c| c.expect("valid").kind)
            .collect();
        assert_eq!(kinds.first(), Some(b"IHDR"));
        assert_eq!(kinds.last(), Some(b"IEND"));
        assert_eq!(
            &kinds[kinds.len() - 3..kinds.len() - 1],
            &[*b"tEXt", *b"tEXt"]
        );
        assert_eq!(
            card_texts(&out).expect("texts"),
            vec![("chara", &b"djI="[..]), ("ccv3", &b"djM="[..])]
        );
        // Replacing the chunks again keeps exactly one of each, and stripping restores the
        // original bytes.
        let again = with_texts(&out, &[("ccv3", b"eA==")]).expect("rewrite");
        assert_eq!(
            card_texts(&again).expect("texts"),
            vec![("ccv3", &b"eA=="[..])]
        );
        assert_eq!(without_card(&out).expect("strip"), original);
    }

    #[test]
    fn other_text_chunks_are_kept() {
        let original = tiny_png();
        let with_comment = with_texts(&original, &[("Comment", b"hello")]).expect("write");
        let out = with_texts(&with_comment, &[("ccv3", b"eA==")]).expect("write");
        let texts: Vec<_> = chunks(&out)
            .expect("sig")
            .filter_map(|c| c.expect("valid").text().map(|(k, _)| k.to_vec()))
            .collect();
        assert_eq!(texts, vec![b"Comment".to_vec(), b"ccv3".to_vec()]);
    }

    fn expect_png_error(bytes: &[u8], needle: &str) {
        let err = card_texts(bytes).expect_err("must fail");
        assert!(
            matches!(err, CardError::Png(_)) && err.to_string().contains(needle),
            "{err} should mention {needle:?}"
        );
    }

    #[test]
    fn malformed_pngs_are_clear_errors() {
        let good = with_texts(&tiny_png(), &[("chara", b"eA==")]).expect("write");
        expect_png_error(b"GIF89a", "signature");
        expect_png_error(&good[..good.len() - 5], "truncated");
        expect_png_error(&good[..8], "IEND");
        // A CRC mismatch in the middle of the file.
        let mut bad_crc = good.clone();
        let ihdr_crc = 8 + 8 + 13;
        bad_crc[ihdr_crc] ^= 0xff;
        expect_png_error(&bad_crc, "CRC");
        // A chunk declaring 2 GiB: rejected without allocating it.
        let mut huge = SIGNATURE.to_vec();
        huge.extend_from_slice(&0x7fff_fff0_u32.to_be_bytes());
        huge.extend_from_slice(b"IHDR");
        huge.extend_from_slice(&[0; 20]);
        expect_png_error(&huge, "declares");
        let mut over = SIGNATURE.to_vec();
        over.extend_from_slice(&u32::MAX.to_be_bytes());
        over.extend_from_slice(b"IHDR");
        over.extend_from_slice(&[0; 8]);
        expect_png_error(&over, "more than PNG allows");
        // A file whose first chunk is not IHDR.
        let mut no_ihdr = SIGNATURE.to_vec();
        write_chunk(&mut no_ihdr, b"IEND", &[]).expect("chunk");
        expect_png_error(&no_ihdr, "not IHDR");
        // A chunk type that is not letters.
        let mut bad_type = SIGNATURE.to_vec();
        write_chunk(&mut bad_type, b"IH\0R", &[]).expect("chunk");
        expect_png_error(&bad_type, "invalid type");
    }

    #[test]
    fn bytes_after_iend_are_ignored() {
        let mut png_bytes = tiny_png();
        png_bytes.extend_from_slice(b"trailing garbage");
        assert!(card_texts(&png_bytes).expect("valid").is_empty());
        assert_eq!(without_card(&png_bytes).expect("strip"), tiny_png());
    }
}
