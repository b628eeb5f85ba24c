//! Message templates (SPEC section 1): `{column}` is replaced per recipient, `{{` and `}}` are
//! literal braces, and an unknown placeholder is an error found before anything is sent. A
//! template is parsed once and rendered per recipient without re-parsing.

/// One parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Field(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unclosed '{{' at character {0} (write '{{{{' for a literal brace)")]
    Unclosed(usize),
    #[error("'}}' without a matching '{{' at character {0} (write '}}}}' for a literal brace)")]
    UnmatchedClose(usize),
    #[error("empty placeholder '{{}}' at character {0}")]
    EmptyPlaceholder(usize),
    #[error("unknown placeholder {{{name}}}; available: {available}")]
    UnknownPlaceholder { name: String, available: String },
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut segments = Vec::new();
        let mut literal = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((position, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|&(_, next)| next) == Some('{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek().map(|&(_, next)| next) == Some('}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some((_, '}')) => break,
                            Some((_, '{')) | None => return Err(TemplateError::Unclosed(position)),
                            Some((_, c)) => name.push(c),
                        }
                    }
                    let name = name.trim().to_string();
                    if name.is_empty() {
                        return Err(TemplateError::EmptyPlaceholder(position));
                    }
                    if !literal.is_empty() {
                        segments.push(Segment::Literal(std::mem::take(&mut literal)));
                    }
                    segments.push(Segment::Field(name));
                }
                '}' => return Err(TemplateError::UnmatchedClose(position)),
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            segments.push(Segment::Literal(literal));
        }
        Ok(Template { segments })
    }

    /// Whether the text starts with a placeholder: only then can what it renders start
    /// differently from what was checked in the template itself.
    pub fn starts_with_placeholder(&self) -> bool {
        matches!(self.segments.first(), Some(Segment::Field(_)))
    }

    /// The placeholder names, in order of appearance.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|segment| match segment {
            Segment::Field(name) => Some(name.as_str()),
            Segment::Literal(_) => None,
        })
    }

    /// Fails on the first placeholder that is not among `available`.
    pub fn check_fields(&self, available: &[&str]) -> Result<(), TemplateError> {
        match self.fields().find(|name| !available.contains(name)) {
            None => Ok(()),
            Some(name) => Err(TemplateError::UnknownPlaceholder {
                name: name.to_string(),
                available: available
                    .iter()
                    .map(|a| format!("{{{a}}}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// Appends the rendered text to `out`. `value` answers for every field that
    /// [`check_fields`](Self::check_fields) accepted; a field it does not know renders empty.
    pub fn render_into<'a>(&self, value: impl Fn(&str) -> Option<&'a str>, out: &mut String) {
        for segment in &self.segments {
            match segment {
                Segment::Literal(text) => out.push_str(text),
                Segment::Field(name) => out.push_str(value(name).unwrap_or_default()),
            }
        }
    }
}

/// Writes the template back in the form [`Template::parse`] reads.
impl std::fmt::Display for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for segment in &self.segments {
            match segment {
                Segment::Literal(text) => {
                    f.write_str(&text.replace('{', "{{").replace('}', "}}"))?
                }
                Segment::Field(name) => write!(f, "{{{name}}}")?,
            }
        }
        Ok(())
    }
}

/// The message a recipient receives: the rendered `[message] header` on the first line (when
/// set), a newline, then the rendered body (SPEC section 7); an ad has a [`Frame`] around them.
#[derive(Debug, Clone)]
pub struct MessageTemplate {
    pub header: Option<Template>,
    pub body: Template,
    pub frame: Option<Frame>,
}

/// Two fixed lines around a message, one before the header and one after the body: an ad's
/// `(광고) {sender}` and its opt-out line (SPEC section 10). Not templates: written as given.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Frame {
    pub first_line: String,
    pub last_line: String,
}

impl MessageTemplate {
    /// The source columns the message's placeholders name besides `name` and `phone`, each once,
    /// in order of first use.
    pub fn source_fields(&self) -> Vec<String> {
        let mut fields: Vec<String> = Vec::new();
        let parts = self.header.iter().chain(std::iter::once(&self.body));
        for field in parts.flat_map(Template::fields) {
            if !matches!(field, "name" | "phone") && !fields.iter().any(|f| f == field) {
                fields.push(field.to_string());
            }
        }
        fields
    }

    pub fn check_fields(&self, available: &[&str]) -> Result<(), TemplateError> {
        if let Some(header) = &self.header {
            header.check_fields(available)?;
        }
        self.body.check_fields(available)
    }

    pub fn render<'a>(&self, value: impl Fn(&str) -> Option<&'a str> + Copy) -> String {
        self.render_checking(value, |_| false).0
    }

    /// Renders like [`render`](Self::render), and says whether `starts_wrongly` holds for the
    /// header or the body as rendered (an ad marker taken from the source). Only a part that
    /// starts with a placeholder is looked at: the others were checked as templates, so the
    /// check costs nothing for them, and the message is rendered once either way.
    pub fn render_checking<'a>(
        &self,
        value: impl Fn(&str) -> Option<&'a str> + Copy,
        starts_wrongly: impl Fn(&str) -> bool,
    ) -> (String, bool) {
        let mut out = String::new();
        let mut wrong = false;
        let mut part_into = |part: &Template, out: &mut String| {
            let start = out.len();
            part.render_into(value, out);
            wrong |= part.starts_with_placeholder() && starts_wrongly(&out[start..]);
        };
        if let Some(frame) = &self.frame {
            out.push_str(&frame.first_line);
            out.push('\n');
        }
        if let Some(header) = &self.header {
            part_into(header, &mut out);
            out.push('\n');
        }
        part_into(&self.body, &mut out);
        if let Some(frame) = &self.frame {
            out.push('\n');
            out.push_str(&frame.last_line);
        }
        (out, wrong)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_text_is_a_template_or_an_error_without_panic(text in "\\PC{0,60}") {
            if let Ok(template) = Template::parse(&text) {
                // Printed back, a template parses to itself.
                prop_assert_eq!(Template::parse(&template.to_string()), Ok(template.clone()));
                // Rendering never panics, whatever the values.
                let mut out = String::new();
                template.render_into(|_| Some("값 {x} }}"), &mut out);
            }
        }

        #[test]
        fn literal_text_with_escaped_braces_renders_as_written(text in "[^{}]{0,30}") {
            let template = Template::parse(&format!("{{{{{text}}}}}")).unwrap();
            let mut out = String::new();
            template.render_into(|_| None, &mut out);
            prop_assert_eq!(out, format!("{{{text}}}"));
        }
    }

    fn render(template: &str, fields: &[(&str, &str)]) -> String {
        let mut out = String::new();
        let lookup = |name: &str| fields.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
        Template::parse(template)
            .unwrap()
            .render_into(lookup, &mut out);
        out
    }

    #[test]
    fn placeholders_are_replaced_and_double_braces_are_literal() {
        assert_eq!(
            render("{name}님, 안녕하세요.", &[("name", "김민준")]),
            "김민준님, 안녕하세요."
        );
        assert_eq!(
            render("{{name}} is {name}", &[("name", "x")]),
            "{name} is x"
        );
        assert_eq!(render("}}{{", &[]), "}{");
        assert_eq!(render("no fields", &[]), "no fields");
        assert_eq!(render("{ name }", &[("name", "x")]), "x");
    }

    #[test]
    fn a_template_displays_as_it_parses() {
        for text in ["{name}님 {{literal}} }}", "plain", "{a}{b}"] {
            assert_eq!(Template::parse(text).unwrap().to_string(), text);
        }
    }

    #[test]
    fn malformed_templates_are_refused() {
        assert_eq!(
            Template::parse("hello {name"),
            Err(TemplateError::Unclosed(6))
        );
        assert_eq!(Template::parse("a {b{c}"), Err(TemplateError::Unclosed(2)));
        assert_eq!(
            Template::parse("a } b"),
            Err(TemplateError::UnmatchedClose(2))
        );
        assert_eq!(
            Template::parse("{}"),
            Err(TemplateError::EmptyPlaceholder(0))
        );
    }

    #[test]
    fn unknown_placeholders_are_named() {
        let template = Template::parse("{name} {coupon}").unwrap();
        let error = template.check_fields(&["name", "phone"]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "unknown placeholder {coupon}; available: {name}, {phone}"
        );
    }

    #[test]
    fn the_header_goes_on_its_own_first_line() {
        let message = MessageTemplate {
            header: Some(Template::parse("{name}님, 안녕하세요. 현대 오토에버입니다.").unwrap()),
            body: Template::parse("쿠폰이 도착했습니다.").unwrap(),
            frame: None,
        };
        let text = message.render(|name| (name == "name").then_some("이서연"));
        assert_eq!(
            text,
            "이서연님, 안녕하세요. 현대 오토에버입니다.\n쿠폰이 도착했습니다."
        );
        let bare = MessageTemplate {
            header: None,
            ..message.clone()
        };
        assert_eq!(bare.render(|_| None), "쿠폰이 도착했습니다.");
    }

    #[test]
    fn a_frame_goes_first_and_last_joined_by_single_newlines() {
        let frame = Frame {
            first_line: "(광고) 현대오토에버".into(),
            last_line: "무료수신거부 080-123-4567".into(),
        };
        let message = MessageTemplate {
            header: Some(Template::parse("{name}님").unwrap()),
            body: Template::parse("쿠폰").unwrap(),
            frame: Some(frame.clone()),
        };
        assert_eq!(
            message.render(|_| Some("이서연")),
            "(광고) 현대오토에버\n이서연님\n쿠폰\n무료수신거부 080-123-4567"
        );
        let no_header = MessageTemplate {
            header: None,
            ..message
        };
        assert_eq!(
            no_header.render(|_| None),
            "(광고) 현대오토에버\n쿠폰\n무료수신거부 080-123-4567"
        );
    }
}
