//! Chat messages into one prompt: with the model's own chat template when its GGUF carries one
//! (`tokenizer.chat_template`, a Jinja template rendered by minijinja as Hugging Face renders it),
//! else with genq's plain template (docs/openai.md):
//!
//! ```text
//! System: <content>
//! User: <content>
//! Assistant: <content>
//! Assistant:
//! ```
//!
//! GPT-2 was never trained on turns, so the plain template also stops generation at the next
//! `\nUser:`, which a model continuing the dialogue would write next.

use minijinja::{Environment, context};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ApiError;

/// Where the plain template's answer ends.
pub const PLAIN_STOP: &str = "\nUser:";

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Message {
    pub role: String,
    /// A string, or a list of `{"type": "text", "text": ...}` parts.
    pub content: Option<Value>,
    /// Accepted and ignored (a participant's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A message's role and text, checked.
#[derive(Debug, Serialize)]
struct Turn {
    role: String,
    content: String,
}

/// The prompt for `messages`, and the stops the template adds.
pub fn render(
    messages: &[Message],
    template: Option<&ChatTemplate>,
) -> Result<(String, Vec<&'static str>), ApiError> {
    if messages.is_empty() {
        return Err(ApiError::invalid("messages", "messages must not be empty"));
    }
    let turns = messages
        .iter()
        .enumerate()
        .map(|(i, m)| turn(i, m))
        .collect::<Result<Vec<_>, _>>()?;
    match template {
        Some(template) => Ok((template.render(&turns)?, Vec::new())),
        None => Ok((plain(&turns), vec![PLAIN_STOP])),
    }
}

fn turn(index: usize, message: &Message) -> Result<Turn, ApiError> {
    let field = |name: &str| format!("messages[{index}].{name}");
    let role = match message.role.as_str() {
        "system" | "developer" | "user" | "assistant" => message.role.clone(),
        other => {
            return Err(ApiError::invalid(
                field("role"),
                format!(
                    "role '{other}' is not supported: give system, developer, user or assistant"
                ),
            ));
        }
    };
    let content = match &message.content {
        None | Some(Value::Null) if role == "assistant" => String::new(),
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for part in parts {
                match (
                    part.get("type").and_then(Value::as_str),
                    part.get("text").and_then(Value::as_str),
                ) {
                    (Some("text"), Some(part)) => text.push_str(part),
                    _ => {
                        return Err(ApiError::invalid(
                            field("content"),
                            "only text content parts ({\"type\": \"text\", \"text\": ...}) are supported",
                        ));
                    }
                }
            }
            text
        }
        _ => {
            return Err(ApiError::invalid(
                field("content"),
                "content must be a string or a list of text parts",
            ));
        }
    };
    Ok(Turn { role, content })
}

fn plain(turns: &[Turn]) -> String {
    let mut prompt = String::new();
    for turn in turns {
        let speaker = match turn.role.as_str() {
            "user" => "User",
            "assistant" => "Assistant",
            _ => "System",
        };
        prompt.push_str(speaker);
        prompt.push_str(": ");
        prompt.push_str(&turn.content);
        prompt.push('\n');
    }
    prompt.push_str("Assistant:");
    prompt
}

/// A model's Jinja chat template, compiled once.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChatTemplate")
    }
}

impl ChatTemplate {
    /// Compiles the template; an error says why the model's template cannot be used.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> anyhow::Result<ChatTemplate> {
        let mut env = Environment::new();
        // Hugging Face templates call Python's string methods (`.strip()`, `.startswith()`).
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    message,
                ))
            },
        );
        env.add_template_owned("chat", source.to_owned())?;
        Ok(ChatTemplate {
            env,
            bos_token: bos_token.to_owned(),
            eos_token: eos_token.to_owned(),
        })
    }

    fn render(&self, turns: &[Turn]) -> Result<String, ApiError> {
        let template = self
            .env
            .get_template("chat")
            .map_err(|e| ApiError::Internal(e.into()))?;
        template
            .render(context! {
                messages => turns,
                add_generation_prompt => true,
                bos_token => self.bos_token,
                eos_token => self.eos_token,
            })
            .map_err(|e| {
                ApiError::invalid(
                    "messages",
                    format!("the model's chat template refused the messages: {e}"),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(role: &str, content: Value) -> Message {
        Message {
            role: role.into(),
            content: Some(content),
            name: None,
        }
    }

    #[test]
    fn the_plain_template_names_each_speaker_and_ends_with_the_assistants_turn() {
        let messages = [
            message("system", "Be brief.".into()),
            message(
                "user",
                serde_json::json!([{ "type": "text", "text": "Hi" }]),
            ),
            message("assistant", "Hello.".into()),
            message("user", "Bye?".into()),
        ];

        let (prompt, stops) = render(&messages, None).unwrap();

        assert_eq!(
            prompt,
            "System: Be brief.\nUser: Hi\nAssistant: Hello.\nUser: Bye?\nAssistant:"
        );
        assert_eq!(stops, vec!["\nUser:"]);
    }

    #[test]
    fn a_models_own_template_renders_the_messages_with_its_tokens() {
        // ChatML, as Qwen and many fine-tunes ship it.
        let chatml = "{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + m.content.strip() + '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
        let template = ChatTemplate::new(chatml, "<s>", "</s>").unwrap();
        let messages = [message("user", " Hi ".into())];

        let (prompt, stops) = render(&messages, Some(&template)).unwrap();

        assert_eq!(
            prompt,
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        assert!(stops.is_empty());
    }

    #[test]
    fn a_template_that_raises_refuses_the_messages_with_its_reason() {
        let strict = "{% if messages[0].role != 'user' %}{{ raise_exception('first must be user') }}{% endif %}";
        let template = ChatTemplate::new(strict, "", "").unwrap();

        let error = render(&[message("assistant", "x".into())], Some(&template)).unwrap_err();

        let ApiError::InvalidField { field, message } = error else {
            panic!("{error:?}")
        };
        assert_eq!(field, "messages");
        assert!(message.contains("first must be user"), "{message}");
    }

    #[test]
    fn a_tool_role_or_an_image_part_is_refused_naming_the_message() {
        let tool = render(&[message("tool", "x".into())], None).unwrap_err();
        let image = render(
            &[message(
                "user",
                serde_json::json!([{ "type": "image_url", "image_url": {} }]),
            )],
            None,
        )
        .unwrap_err();

        assert!(
            matches!(tool, ApiError::InvalidField { ref field, .. } if field == "messages[0].role")
        );
        assert!(
            matches!(image, ApiError::InvalidField { ref field, .. } if field == "messages[0].content")
        );
    }
}
