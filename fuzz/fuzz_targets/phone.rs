//! Any text: a phone or an error, never a panic; what is accepted parses back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use msgsend::phone::Phone;

fuzz_target!(|text: &str| {
    if let Ok(phone) = Phone::parse(text) {
        assert_eq!(Phone::parse(phone.as_str()), Ok(phone.clone()));
        assert!(!phone.masked().is_empty());
    }
});
