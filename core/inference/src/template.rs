//! Chat templates: the Jinja template stored in the GGUF metadata, rendered with minijinja.

use minijinja::{Environment, ErrorKind, context};
use serde::Serialize;

use crate::{InferenceError, Result};

/// ChatML, used when a model does not carry a template.
pub const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// A compiled chat template.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
}

#[derive(Serialize)]
struct Msg<'a> {
    role: &'a str,
    content: &'a str,
}

impl ChatTemplate {
    /// Compiles a Jinja chat template (Hugging Face `chat_template` conventions).
    pub fn new(source: &str, bos: &str, eos: &str) -> Result<Self> {
        let mut env = Environment::new();
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
            },
        );
        env.add_template_owned("chat", source.to_owned())
            .map_err(|e| InferenceError::Template(e.to_string()))?;
        Ok(Self {
            env,
            bos: bos.to_owned(),
            eos: eos.to_owned(),
        })
    }

    /// ChatML.
    pub fn chatml() -> Self {
        // CHATML is a constant that compiles: covered by a unit test.
        Self::new(CHATML, "", "<|im_end|>").unwrap_or_else(|_| unreachable!("CHATML compiles"))
    }

    /// Renders `(role, content)` messages; with `add_generation_prompt` the text ends where
    /// the assistant's reply begins.
    pub fn render<'a>(
        &self,
        messages: impl IntoIterator<Item = (&'a str, &'a str)>,
        add_generation_prompt: bool,
    ) -> Result<String> {
        let messages: Vec<Msg<'_>> = messages
            .into_iter()
            .map(|(role, content)| Msg { role, content })
            .collect();
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| InferenceError::Template(e.to_string()))?;
        tmpl.render(context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos,
            eos_token => self.eos,
        })
        .map_err(|e| InferenceError::Template(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_renders_turns_and_generation_prompt() {
        let t = ChatTemplate::chatml();
        let s = t
            .render([("system", "Be kind."), ("user", "Hi")], true)
            .expect("renders");
        assert_eq!(
            s,
            "<|im_start|>system\nBe kind.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn raise_exception_surfaces_as_an_error() {
        let t =
            ChatTemplate::new("{{ raise_exception('no system role') }}", "", "").expect("compiles");
        let err = t.render([("user", "x")], true).expect_err("raises");
        assert!(err.to_string().contains("no system role"));
    }

    #[test]
    fn a_broken_template_is_an_error_not_a_panic() {
        assert!(ChatTemplate::new("{% for %}", "", "").is_err());
    }
}
