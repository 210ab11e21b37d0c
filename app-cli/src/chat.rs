//! `nexus chat`: interactive chat with streaming output, or one reply with `--message`.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use clap::Args;
use nexus_app::native::{self, NativeConfig};
use nexus_app::{CancelToken, Companion, Conversation, Flow, Nexus, Role};
use serde::Serialize;

use crate::error::CliError;

#[derive(Debug, Args)]
pub struct ChatArgs {
    /// The companion to talk to (default: the last one you used).
    #[arg(long, short)]
    companion: Option<String>,
    /// Send one message, print the reply and exit.
    #[arg(long, short)]
    message: Option<String>,
    /// With --message: print one JSON object instead of text.
    #[arg(long, requires = "message")]
    json: bool,
    /// Start a new conversation instead of continuing the last one.
    #[arg(long)]
    new: bool,
    /// Longest reply, in tokens.
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    /// Sampling temperature (0: always the most likely word).
    #[arg(long)]
    temperature: Option<f32>,
    /// Seed for reproducible replies.
    #[arg(long)]
    seed: Option<u64>,
}

#[derive(Serialize)]
struct JsonReply<'a> {
    reply: &'a str,
    tokens: usize,
    ms_to_first_token: f64,
    tokens_per_s: f64,
    companion: &'a str,
    conversation_id: String,
    finish: &'a nexus_inference::FinishReason,
    prompt_tokens: usize,
    model_load_ms: f64,
    memories_used: Vec<UsedView<'a>>,
}

fn load(config: &NativeConfig, args: &ChatArgs) -> Result<(Nexus, f64), CliError> {
    let mut app = native::open(config)?;
    let mut settings = app.chat_settings().clone();
    settings.max_reply_tokens = args.max_tokens.max(1);
    if let Some(t) = args.temperature {
        if !(0.0..=5.0).contains(&t) {
            return Err(CliError::Usage(format!(
                "--temperature must be between 0 and 5, not {t}"
            )));
        }
        settings.sampling.temperature = t;
    }
    settings.sampling.seed = args.seed;
    app.set_chat_settings(settings);
    let t = Instant::now();
    // The embedding model (long-term memory) loads beside the chat model.
    let (llm, embedder) = std::thread::scope(|s| {
        let embedder = s.spawn(|| native::load_embedder(config).map(Arc::new));
        let llm = native::load_chat_model(config);
        (llm, embedder.join())
    });
    app.set_language_model(Box::new(llm?));
    let shared = match embedder {
        Ok(Ok(e)) => {
            app.set_embedder(Box::new(e.clone()));
            Some(e)
        }
        // Chat still works without memory; say so once.
        Ok(Err(e)) => {
            eprintln!("(long-term memory is off: {e})");
            None
        }
        Err(_) => {
            eprintln!("(long-term memory is off: the embedding model failed to load)");
            None
        }
    };
    // The user's messages are scored and journalled when the text emotion model is available
    // (tone guidance, the emotion journal); chat works without it. It runs on the embedder's
    // lower layers (one copy of MiniLM in memory) when the embedder loaded.
    let text_emotion = match shared {
        Some(e) => native::load_text_emotion_with(config, e),
        None => native::load_text_emotion(config),
    };
    match text_emotion {
        Ok(model) => app.set_text_emotion(model),
        Err(e) => tracing::warn!("text emotion is off: {e}"),
    }
    Ok((app, t.elapsed().as_secs_f64() * 1e3))
}

#[derive(Serialize)]
struct UsedView<'a> {
    id: String,
    text: &'a str,
    kind: &'static str,
    relevance: f32,
    score: f32,
}

fn used_views(reply: &nexus_app::Reply) -> Vec<UsedView<'_>> {
    reply
        .memories_used
        .iter()
        .map(|r| UsedView {
            id: r.memory.id.to_string(),
            text: &r.memory.text,
            kind: r.memory.kind.as_str(),
            relevance: r.relevance,
            score: r.score,
        })
        .collect()
}

fn print_why(app: &Nexus, conversation: &Conversation) -> Result<(), CliError> {
    let Some(last) = app.last_reply(conversation.id)? else {
        println!("No reply yet.");
        return Ok(());
    };
    let why = app.why(&last)?;
    if why.memories.is_empty() {
        println!("No memories informed the last reply.");
        return Ok(());
    }
    println!("The last reply was informed by:");
    for (id, m) in &why.memories {
        match m {
            Some(m) => println!("  {}", crate::memory::line(m)),
            None => println!("  {id} (forgotten since)"),
        }
    }
    Ok(())
}

pub fn run(config: &NativeConfig, args: ChatArgs, started: Instant) -> Result<(), CliError> {
    if let Some(text) = args.message.as_deref() {
        if text.trim().is_empty() {
            return Err(CliError::Usage("--message is empty".into()));
        }
        return one_shot(config, &args, text, started);
    }
    interactive(config, &args)
}

fn pick(app: &Nexus, name: Option<&str>, new: bool) -> Result<(Companion, Conversation), CliError> {
    let companion = app.companion_or_default(name)?;
    app.set_active_companion(&companion)?;
    let conversation = if new {
        app.new_conversation(&companion)?
    } else {
        app.current_conversation(&companion)?
    };
    Ok((companion, conversation))
}

fn one_shot(
    config: &NativeConfig,
    args: &ChatArgs,
    text: &str,
    started: Instant,
) -> Result<(), CliError> {
    let (mut app, model_load_ms) = load(config, args)?;
    let (companion, conversation) = pick(&app, args.companion.as_deref(), args.new)?;
    let mut out = std::io::stdout().lock();
    let mut first_at: Option<Instant> = None;
    let json = args.json;
    let reply = app.send(conversation.id, text, None, &mut |piece| {
        first_at.get_or_insert_with(Instant::now);
        if !json {
            let _ = out.write_all(piece.as_bytes());
            let _ = out.flush();
        }
        Flow::Continue
    })?;
    let g = &reply.generation;
    if json {
        let body = JsonReply {
            reply: reply.reply_message.as_ref().map_or("", |m| m.text.as_str()),
            tokens: g.tokens,
            // From the start of the command: what a script calling `nexus` waits for.
            ms_to_first_token: first_at
                .map_or(0.0, |t| t.duration_since(started).as_secs_f64() * 1e3),
            tokens_per_s: g.tokens_per_s,
            companion: &companion.name,
            conversation_id: conversation.id.to_string(),
            finish: &g.finish,
            prompt_tokens: g.prompt_tokens,
            model_load_ms,
            memories_used: used_views(&reply),
        };
        serde_json::to_writer(&mut out, &body).map_err(std::io::Error::other)?;
    }
    writeln!(out)?;
    Ok(())
}

const HELP: &str = "\
Commands:
  /help              this help
  /companion NAME    talk to another companion
  /companions        list your companions
  /new               start a new conversation
  /history           show this conversation
  /why               which memories informed the last reply
  /memories          what the companion remembers about you
  /quit              leave (Ctrl-D works too)
While the companion is answering, Ctrl-C stops the answer.";

fn print_history(
    app: &Nexus,
    companion: &Companion,
    conversation: &Conversation,
    limit: usize,
) -> Result<(), CliError> {
    for m in app.messages(conversation.id, Some(limit))? {
        let who = match m.role {
            Role::User => "you",
            Role::Assistant => companion.name.as_str(),
            Role::System => "system",
        };
        println!("{who}> {}", m.text);
    }
    Ok(())
}

fn interactive(config: &NativeConfig, args: &ChatArgs) -> Result<(), CliError> {
    let tty = std::io::stdin().is_terminal();
    let (mut app, _) = load(config, args)?;
    let (mut companion, mut conversation) = pick(&app, args.companion.as_deref(), args.new)?;
    // Sync in the background while chatting (if enabled); stops when the chat ends.
    let _sync = crate::sync::Background::start(&config.data_dir);

    // Ctrl-C cancels the answer in progress; at the prompt it leaves.
    let current: Arc<Mutex<Option<CancelToken>>> = Arc::new(Mutex::new(None));
    {
        let current = Arc::clone(&current);
        let _ = ctrlc::set_handler(move || match current.lock().ok().and_then(|c| c.clone()) {
            Some(token) => token.cancel(),
            None => {
                eprintln!();
                std::process::exit(130);
            }
        });
    }

    println!("Chatting with {}. Type /help for commands.", companion.name);
    print_history(&app, &companion, &conversation, 6)?;
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        if tty {
            print!("you> ");
            std::io::stdout().flush()?;
        }
        let Some(line) = lines.next() else { break };
        let line = line?;
        let input = line.trim();
        if input.is_empty() {
            continue;
        }
        if let Some(cmd) = input.strip_prefix('/') {
            let (name, arg) = cmd
                .split_once(char::is_whitespace)
                .map_or((cmd, ""), |(a, b)| (a, b.trim()));
            match name {
                "quit" | "exit" | "q" => break,
                "help" | "h" | "?" => println!("{HELP}"),
                "new" => {
                    conversation = app.new_conversation(&companion)?;
                    println!("(new conversation)");
                    print_history(&app, &companion, &conversation, 1)?;
                }
                "history" => print_history(&app, &companion, &conversation, 50)?,
                "why" => print_why(&app, &conversation)?,
                "memories" => {
                    let all = app.memories(&companion, false)?;
                    if all.is_empty() {
                        println!(
                            "{} doesn't remember anything about you yet.",
                            companion.name
                        );
                    }
                    for m in &all {
                        println!("  {}", crate::memory::line(m));
                    }
                }
                "companions" => {
                    for c in app.companions()? {
                        println!(
                            "{}{}",
                            c.name,
                            if c.id == companion.id {
                                " (current)"
                            } else {
                                ""
                            }
                        );
                    }
                }
                "companion" if arg.is_empty() => println!("usage: /companion NAME"),
                "companion" => match pick(&app, Some(arg), false) {
                    Ok((c, conv)) => {
                        companion = c;
                        conversation = conv;
                        println!("Now chatting with {}.", companion.name);
                        print_history(&app, &companion, &conversation, 4)?;
                    }
                    Err(e) => println!("{e}"),
                },
                other => println!("unknown command /{other}; /help lists the commands"),
            }
            continue;
        }

        let token = CancelToken::new();
        if let Ok(mut c) = current.lock() {
            *c = Some(token.clone());
        }
        print!("{}> ", companion.name);
        std::io::stdout().flush()?;
        let mut out = std::io::stdout().lock();
        let result = app.send(conversation.id, input, Some(token), &mut |piece| {
            let _ = out.write_all(piece.as_bytes());
            let _ = out.flush();
            Flow::Continue
        });
        drop(out);
        if let Ok(mut c) = current.lock() {
            *c = None;
        }
        match result {
            Ok(r) if r.generation.finish == nexus_inference::FinishReason::Cancelled => {
                println!(" [stopped]")
            }
            Ok(_) => println!(),
            Err(e) => println!("\n(error: {e})"),
        }
    }
    Ok(())
}
