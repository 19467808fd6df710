//! Text codecs for the xso derives: size-capped base64 and the `kex` flag.

use std::borrow::Cow;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use xso::error::Error as XsoError;
use xso::{FromXmlText, TextCodec};

/// Decoding accepts missing padding (some implementations strip it); encoding always pads.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Errors raised inside the codecs; [`crate::Error`] turns them into typed variants.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CodecError {
    #[error("invalid base64 in <{field}>")]
    InvalidBase64 { field: &'static str },
    #[error("<{field}> exceeds {limit} bytes")]
    TooLarge { field: &'static str, limit: usize },
}

/// Standard base64 (RFC 4648 §4) with XML whitespace ignored and a cap on the decoded size,
/// checked before decoding so that hostile input cannot make us allocate much.
pub(crate) struct Base64Text {
    field: &'static str,
    max: usize,
}

impl Base64Text {
    pub(crate) const fn new(field: &'static str, max: usize) -> Self {
        Self { field, max }
    }
}

/// Decodes base64 text, ignoring XML whitespace, refusing more than `max` decoded bytes.
pub(crate) fn decode_base64(
    field: &'static str,
    max: usize,
    text: &str,
) -> Result<Vec<u8>, CodecError> {
    let compact: Cow<'_, str> = if text
        .bytes()
        .any(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
    {
        Cow::Owned(
            text.chars()
                .filter(|c| !matches!(c, ' ' | '\t' | '\r' | '\n'))
                .collect(),
        )
    } else {
        Cow::Borrowed(text)
    };
    let max_encoded = max.div_ceil(3).saturating_mul(4);
    if compact.len() > max_encoded {
        return Err(CodecError::TooLarge { field, limit: max });
    }
    let bytes = base64::Engine::decode(&LENIENT, compact.as_bytes())
        .map_err(|_| CodecError::InvalidBase64 { field })?;
    if bytes.len() > max {
        return Err(CodecError::TooLarge { field, limit: max });
    }
    Ok(bytes)
}

/// Encodes bytes as padded standard base64.
pub(crate) fn encode_base64(bytes: &[u8]) -> String {
    base64::Engine::encode(&STANDARD, bytes)
}

impl TextCodec<Vec<u8>> for Base64Text {
    fn decode(&self, s: String) -> Result<Vec<u8>, XsoError> {
        decode_base64(self.field, self.max, &s).map_err(XsoError::text_parse_error)
    }

    fn encode<'x>(&self, value: &'x Vec<u8>) -> Result<Option<Cow<'x, str>>, XsoError> {
        Ok(Some(Cow::Owned(encode_base64(value))))
    }
}

/// `xs:boolean` that is only written when true (`kex='true'`), as twomemo does; reading accepts
/// `true`, `1`, `false` and `0`.
pub(crate) struct TrueOrAbsent;

impl TextCodec<bool> for TrueOrAbsent {
    fn decode(&self, s: String) -> Result<bool, XsoError> {
        bool::from_xml_text(s)
    }

    fn encode<'x>(&self, value: &'x bool) -> Result<Option<Cow<'x, str>>, XsoError> {
        Ok(value.then_some(Cow::Borrowed("true")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_capped_and_lenient_about_whitespace_and_padding() {
        assert_eq!(
            decode_base64("x", 8, "AAEC\n AwQ=").ok(),
            Some(vec![0, 1, 2, 3, 4])
        );
        assert_eq!(
            decode_base64("x", 8, "AAECAwQ").ok(),
            Some(vec![0, 1, 2, 3, 4])
        );
        assert!(matches!(
            decode_base64("x", 2, "AAEC"),
            Err(CodecError::TooLarge { limit: 2, .. })
        ));
        assert!(matches!(
            decode_base64("x", 8, "A*=="),
            Err(CodecError::InvalidBase64 { .. })
        ));
        assert_eq!(decode_base64("x", 8, "").ok(), Some(vec![]));
    }
}
