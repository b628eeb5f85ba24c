//! A message's length as the Korean carriers count an SMS (SPEC section 10): bytes in EUC-KR,
//! restricted to KS X 1001. Up to [`SHORT_SMS_BYTES`] is a short SMS, more a long one (LMS);
//! a character outside KS X 1001 (an emoji, or one of the Hangul syllables only Microsoft's
//! CP949 encodes) cannot go by SMS at all.
//!
//! Why not simply `encoding_rs::EUC_KR`: that encoding is the WHATWG one, which is really
//! CP949 (windows-949). Beside KS X 1001's 2,350 Hangul syllables it encodes the other 8,822
//! (`똠`, `햏`, `쌰`) as two bytes with a lead byte below 0xA1 or a trail byte below 0xA1,
//! which the carriers' EUC-KR does not take. So the text is encoded with it and the output
//! checked: a byte below 0x80 is ASCII; any other character is a pair whose two bytes must
//! both lie in 0xA1..=0xFE, the KS X 1001 code space.
//!
//! It runs once per recipient, over campaigns of millions, so it allocates nothing: pure ASCII
//! is counted without encoding, and other text is encoded into a buffer on the stack.

use encoding_rs::EncoderResult;

/// The most bytes a short SMS holds; a longer message goes as a long one (LMS).
pub const SHORT_SMS_BYTES: usize = 90;

/// The most bytes an SMS provider takes unless its config says otherwise
/// (`[providers.sms] max_message_bytes`), and what the sandbox's SMS endpoint enforces.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 2000;

/// The lowest byte of the KS X 1001 code space, for the lead byte and the trail byte alike.
const KS_X_1001_FIRST_BYTE: u8 = 0xA1;

/// How much encoded text is checked at a time. A message rarely passes it (2,000 bytes at
/// most), and a longer one is simply encoded in several rounds.
const BUFFER_BYTES: usize = 1024;

/// The two kinds of SMS the carriers sell, by length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::IntoStaticStr)]
#[strum(serialize_all = "lowercase")]
pub enum SmsClass {
    /// Up to [`SHORT_SMS_BYTES`]: a short SMS.
    Short,
    /// Longer: a long message (LMS), priced apart.
    Long,
}

impl SmsClass {
    /// `short` or `long`, as the summary's keys (`sms_short`, `sms_long`) spell it.
    pub fn name(self) -> &'static str {
        self.into()
    }
}

/// A message's length in EUC-KR bytes: one for an ASCII character (a newline too), two for
/// any other KS X 1001 character.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SmsLength {
    pub bytes: usize,
}

impl SmsLength {
    /// Short up to [`SHORT_SMS_BYTES`] inclusive, long beyond.
    pub fn class(self) -> SmsClass {
        if self.bytes <= SHORT_SMS_BYTES {
            SmsClass::Short
        } else {
            SmsClass::Long
        }
    }
}

/// A message holds a character outside KS X 1001, so it cannot go by SMS. Its `Display` is
/// the reason SPEC section 10 gives and nothing more: a message is recipients' data and is
/// never quoted in an error, a log or a journal. [`NotRepresentable::code_point`] names the
/// character, for an operator who must find it in a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", NotRepresentable::REASON)]
pub struct NotRepresentable {
    /// The first character of the message that is outside KS X 1001.
    pub character: char,
}

impl NotRepresentable {
    /// The reason, as SPEC section 10 words it (the `Display`, and the sandbox's 400).
    pub const REASON: &'static str = "not representable in EUC-KR";

    /// The character as `U+XXXX`, e.g. `U+B620` for `똠`.
    pub fn code_point(&self) -> String {
        format!("U+{:04X}", u32::from(self.character))
    }
}

/// Measures `text` as the carriers do, or names its first character outside KS X 1001.
pub fn measure(text: &str) -> Result<SmsLength, NotRepresentable> {
    // Most of a campaign's text is Korean, but a template may be plain ASCII, and then no
    // encoding is needed: every byte of it is one EUC-KR byte.
    if text.is_ascii() {
        return Ok(SmsLength { bytes: text.len() });
    }
    let mut encoder = encoding_rs::EUC_KR.new_encoder();
    let mut buffer = [0u8; BUFFER_BYTES];
    let mut bytes = 0;
    let mut rest = text;
    loop {
        let (result, read, written) =
            encoder.encode_from_utf8_without_replacement(rest, &mut buffer, true);
        // `written` bytes are the encoding of the characters in `rest[..read]`, whole
        // characters only: encoding_rs writes a character's bytes all or none.
        if let Some(index) = first_outside_ks_x_1001(&buffer[..written]) {
            let character = rest[..read]
                .chars()
                .nth(index)
                .expect("each encoded character comes from one character read");
            return Err(NotRepresentable { character });
        }
        bytes += written;
        rest = &rest[read..];
        match result {
            EncoderResult::InputEmpty => return Ok(SmsLength { bytes }),
            EncoderResult::OutputFull => continue,
            EncoderResult::Unmappable(character) => return Err(NotRepresentable { character }),
        }
    }
}

/// The index, counted in characters, of the first character of CP949 output that is outside
/// KS X 1001, if any. Every character is one ASCII byte or a pair with a lead byte of 0x81 or
/// more, so the output can be walked without decoding it.
fn first_outside_ks_x_1001(encoded: &[u8]) -> Option<usize> {
    let mut rest = encoded;
    let mut index = 0;
    while let Some((&first, after)) = rest.split_first() {
        if first < 0x80 {
            rest = after;
        } else {
            let (&trail, after) = after
                .split_first()
                .expect("encoding_rs writes both bytes of a pair or neither");
            if first < KS_X_1001_FIRST_BYTE || trail < KS_X_1001_FIRST_BYTE {
                return Some(index);
            }
            rest = after;
        }
        index += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn bytes(text: &str) -> usize {
        measure(text).unwrap().bytes
    }

    fn refused(text: &str) -> char {
        measure(text).unwrap_err().character
    }

    #[test]
    fn ascii_counts_one_byte_per_character() {
        assert_eq!(bytes(""), 0);
        assert_eq!(bytes("a"), 1);
        assert_eq!(bytes("Hello, world! 080-123-4567"), 26);
    }

    #[test]
    fn a_newline_counts_one_byte() {
        assert_eq!(bytes("\n"), 1);
        assert_eq!(bytes("가\n나"), 5);
    }

    #[test]
    fn a_ks_x_1001_hangul_syllable_counts_two_bytes() {
        assert_eq!(bytes("가"), 2);
        assert_eq!(bytes("한"), 2);
        assert_eq!(bytes("똘"), 2);
        assert_eq!(bytes("핏"), 2);
        assert_eq!(bytes("안녕하세요"), 10);
    }

    #[test]
    fn ks_x_1001_symbols_jamo_and_hanja_count_two_bytes() {
        // '€' and '®' were added to KS X 1001 in 1998 (0xA2E6, 0xA2E7).
        for text in ["€", "®", "※", "①", "漢", "ㄱ"] {
            assert_eq!(bytes(text), 2, "{text}");
        }
    }

    #[test]
    fn hangul_syllables_only_cp949_encodes_are_not_representable() {
        // Their CP949 codes: 똠 0x8C63, 쌰 0x9B58, 뷁 0x94EE (lead below 0xA1), 햏 0xC164
        // (trail below 0xA1).
        for syllable in ['똠', '햏', '쌰', '뷁'] {
            assert_eq!(refused(&syllable.to_string()), syllable);
        }
    }

    #[test]
    fn exactly_the_2350_ks_x_1001_hangul_syllables_are_representable() {
        let representable = ('가'..='힣')
            .filter(|syllable| measure(&syllable.to_string()).is_ok())
            .count();
        assert_eq!(representable, 2350);
    }

    #[test]
    fn an_emoji_is_not_representable() {
        assert_eq!(refused("😀"), '😀');
        assert_eq!(refused("할인 쿠폰 도착 😀"), '😀');
    }

    #[test]
    fn a_character_no_korean_encoding_has_is_not_representable() {
        assert_eq!(refused("café"), 'é');
    }

    #[test]
    fn the_first_unrepresentable_character_is_named() {
        assert_eq!(refused("가😀똠"), '😀');
        assert_eq!(refused("가똠😀"), '똠');
        assert_eq!(refused("abc 햏 def"), '햏');
    }

    #[test]
    fn the_error_says_the_reason_and_never_the_message() {
        let error = measure("김민수님, 똠양꿍 할인").unwrap_err();
        assert_eq!(error.to_string(), "not representable in EUC-KR");
        assert_eq!(error.code_point(), "U+B620");
        assert_eq!(measure("😀").unwrap_err().code_point(), "U+1F600");
    }

    #[test]
    fn ninety_bytes_is_a_short_sms_and_ninety_one_a_long_one() {
        let ninety = "가".repeat(45);
        assert_eq!(measure(&ninety).unwrap(), SmsLength { bytes: 90 });
        assert_eq!(measure(&ninety).unwrap().class(), SmsClass::Short);
        let ninety_one = format!("{ninety}a");
        assert_eq!(measure(&ninety_one).unwrap(), SmsLength { bytes: 91 });
        assert_eq!(measure(&ninety_one).unwrap().class(), SmsClass::Long);
        assert_eq!(measure(&"a".repeat(91)).unwrap().class(), SmsClass::Long);
        assert_eq!(SmsClass::Short.name(), "short");
        assert_eq!(SmsClass::Long.name(), "long");
    }

    #[test]
    fn mixed_text_counts_each_character_as_the_carriers_do() {
        // "(광고) " 3 + 2×2, "가게" 2×2, the newline 1, "무료수신거부" 6×2, " " 1,
        // "080-123-4567" 12: 37.
        let ad = "(광고) 가게\n무료수신거부 080-123-4567";
        assert_eq!(bytes(ad), 37);
        assert_eq!(measure(ad).unwrap().class(), SmsClass::Short);
    }

    #[test]
    fn a_message_longer_than_the_buffer_is_measured_whole_and_its_bad_character_found() {
        let long = "한".repeat(BUFFER_BYTES);
        assert_eq!(bytes(&long), 2 * BUFFER_BYTES);
        assert_eq!(refused(&format!("{long}가😀")), '😀');
        assert_eq!(refused(&format!("{long}a똠")), '똠');
    }

    proptest! {
        #[test]
        fn any_text_is_measured_or_refused_without_panic(text in "\\PC{0,300}") {
            let _ = measure(&text);
        }

        #[test]
        fn pure_ascii_counts_its_length(text in "[\\x00-\\x7F]{0,300}") {
            prop_assert_eq!(measure(&text).unwrap().bytes, text.len());
        }

        /// The whole text measures as the sum of its characters, and is refused for its first
        /// refused character, across encoder buffers too (a refused character is rare enough
        /// that it often comes after the first buffer).
        #[test]
        fn a_text_measures_as_its_characters_do(
            characters in proptest::collection::vec(
                prop_oneof![
                    300 => prop::sample::select(vec!['가', '한', '글', '핏', 'ㄱ', '€', '漢']),
                    100 => prop::sample::select(vec!['a', 'Z', '0', ' ', '\n', '(']),
                    1 => prop::sample::select(vec!['똠', '햏', '쌰', '😀', 'é']),
                ],
                0..1500,
            )
        ) {
            let text: String = characters.iter().collect();
            let mut expected = Ok(SmsLength { bytes: 0 });
            for character in &characters {
                match (expected, measure(&character.to_string())) {
                    (Ok(sum), Ok(one)) => {
                        expected = Ok(SmsLength { bytes: sum.bytes + one.bytes });
                    }
                    (_, Err(error)) => {
                        expected = Err(error);
                        break;
                    }
                    (Err(_), _) => unreachable!("the loop stops at the first refusal"),
                }
            }
            prop_assert_eq!(measure(&text), expected);
        }
    }
}
