//! Any text: a rate or a duration or an error, never a panic; valid ones print back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use msgsend::units::{Rate, format_duration, parse_duration};

fuzz_target!(|text: &str| {
    if let Ok(rate) = text.parse::<Rate>() {
        assert_eq!(rate.to_string().parse::<Rate>(), Ok(rate));
    }
    if let Ok(duration) = parse_duration(text) {
        assert_eq!(parse_duration(&format_duration(duration)), Ok(duration));
    }
});
