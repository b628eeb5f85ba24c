//! Any row (fields separated by 0x1f): a recipient or an invalid row naming its line, never a
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use msgsend::recipient::RowShape;

fuzz_target!(|text: &str| {
    let header: Vec<String> = ["name", "phone", "birth_date", "city", "rrn"]
        .iter()
        .map(|c| c.to_string())
        .collect();
    let shape = RowShape::new(&header).expect("a complete header");
    let fields: Vec<&str> = text.split('\u{1f}').collect();
    match shape.recipient(7, &fields) {
        Ok(recipient) => assert_eq!(recipient.line, 7),
        Err(invalid) => assert_eq!(invalid.line, 7),
    }
});
