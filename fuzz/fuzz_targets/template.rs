//! Any text: a template or an error, never a panic; a template prints back to itself and
//! renders with any values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use msgsend::template::Template;

fuzz_target!(|text: &str| {
    if let Ok(template) = Template::parse(text) {
        assert_eq!(Template::parse(&template.to_string()), Ok(template.clone()));
        let mut out = String::new();
        template.render_into(|_| Some("{}"), &mut out);
    }
});
