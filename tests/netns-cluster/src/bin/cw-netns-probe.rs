//! `cw-netns-probe`: the pod "container" and the client of the netns cluster tests.
//!
//! It runs inside a network namespace (started with `ip netns exec`) and does one of:
//!
//! ```text
//! serve --name NAME [--tcp ADDR:PORT]... [--udp ADDR:PORT]...   answer until killed; prints "ready" once bound
//! get ADDR:PORT [--host H] [--path P] [--timeout-ms N]             one HTTP/1.1 GET, prints the body
//! udp ADDR:PORT [--timeout-ms N]                                   one datagram, prints the reply
//! loop ADDR:PORT --duration-ms D [--interval-ms I] [--timeout-ms N] GETs on fresh connections, one line each
//! keepalive ADDR:PORT --count N [--interval-ms I] [--timeout-ms N]  GETs on ONE connection, one line each
//! ```
//!
//! Every TCP listener speaks just enough HTTP/1.1 for the edge proxy and for `get`, and every answer (TCP or UDP)
//! is one line naming the server and the peer address it saw: `pod=NAME peer=IP:PORT local=IP:PORT host=H path=P`.
//! That line is what the checks assert on (who answered, and with which source address the packet arrived).
//! It deliberately uses only the standard library, so it has no start-up cost and no dependency to build.

#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1..]),
        Some("get") => get_cmd(&args[1..]),
        Some("udp") => udp_cmd(&args[1..]),
        Some("loop") => loop_cmd(&args[1..]),
        Some("keepalive") => keepalive_cmd(&args[1..]),
        _ => Err("usage: cw-netns-probe serve|get|udp|loop|keepalive ...".to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cw-netns-probe: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Parsed `--flag value` pairs and positional arguments.
struct Flags {
    positional: Vec<String>,
    pairs: Vec<(String, String)>,
}

impl Flags {
    fn parse(args: &[String]) -> Result<Self, String> {
        let mut positional = Vec::new();
        let mut pairs = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if let Some(name) = a.strip_prefix("--") {
                let value = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
                pairs.push((name.to_string(), value.clone()));
            } else {
                positional.push(a.clone());
            }
        }
        Ok(Self { positional, pairs })
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.pairs.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect()
    }

    fn one(&self, name: &str) -> Option<&str> {
        self.all(name).last().copied()
    }

    fn millis(&self, name: &str, default: u64) -> Result<Duration, String> {
        match self.one(name) {
            None => Ok(Duration::from_millis(default)),
            Some(v) => {
                v.parse().map(Duration::from_millis).map_err(|_| format!("--{name} {v:?} is not a number of ms"))
            }
        }
    }

    fn target(&self) -> Result<SocketAddr, String> {
        let raw = self.positional.first().ok_or("missing ADDR:PORT")?;
        raw.parse().map_err(|_| format!("{raw:?} is not ADDR:PORT"))
    }
}

// === serve ===

fn serve(args: &[String]) -> Result<(), String> {
    let flags = Flags::parse(args)?;
    let name = flags.one("name").ok_or("serve needs --name")?.to_string();
    let mut handles = Vec::new();
    for addr in flags.all("tcp") {
        let listener = TcpListener::bind(addr).map_err(|e| format!("binding tcp {addr}: {e}"))?;
        let name = name.clone();
        handles.push(std::thread::spawn(move || accept_loop(listener, &name)));
    }
    for addr in flags.all("udp") {
        let socket = UdpSocket::bind(addr).map_err(|e| format!("binding udp {addr}: {e}"))?;
        let name = name.clone();
        handles.push(std::thread::spawn(move || udp_loop(socket, &name)));
    }
    if handles.is_empty() {
        return Err("serve needs at least one --tcp or --udp".into());
    }
    // The harness waits for this line, so a check never races the bind.
    println!("ready");
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}

fn accept_loop(listener: TcpListener, name: &str) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let name = name.to_string();
        std::thread::spawn(move || {
            let _ = answer_http(conn, &name);
        });
    }
}

/// Answers HTTP/1.1 requests on one connection (keep-alive, as the proxy's pooled client expects).
fn answer_http(conn: TcpStream, name: &str) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let peer = conn.peer_addr()?;
    let local = conn.local_addr()?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut writer = conn;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let mut host = String::from("-");
        let mut content_length = 0usize;
        let mut close = request_line.trim_end().ends_with("HTTP/1.0");
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                let v = v.trim();
                match k.trim().to_ascii_lowercase().as_str() {
                    "host" => host = v.to_string(),
                    "content-length" => content_length = v.parse().unwrap_or(0),
                    "connection" => close = v.eq_ignore_ascii_case("close"),
                    _ => {}
                }
            }
        }
        // Drain a request body so the next request on the connection starts at its first byte.
        let mut body = vec![0u8; content_length.min(1 << 20)];
        reader.read_exact(&mut body)?;
        let path = request_line.split_whitespace().nth(1).unwrap_or("-");
        let reply = format!("pod={name} peer={peer} local={local} host={host} path={path}\n");
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n{}\r\n",
            reply.len(),
            if close { "connection: close\r\n" } else { "" }
        );
        writer.write_all(head.as_bytes())?;
        writer.write_all(reply.as_bytes())?;
        writer.flush()?;
        if close {
            return Ok(());
        }
    }
}

fn udp_loop(socket: UdpSocket, name: &str) {
    let local = socket.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let mut buf = [0u8; 2048];
    loop {
        let Ok((_, peer)) = socket.recv_from(&mut buf) else { continue };
        let reply = format!("pod={name} peer={peer} local={local} host=- path=-\n");
        let _ = socket.send_to(reply.as_bytes(), peer);
    }
}

// === clients ===

fn get_cmd(args: &[String]) -> Result<(), String> {
    let flags = Flags::parse(args)?;
    let body = http_get(
        flags.target()?,
        flags.one("host"),
        flags.one("path").unwrap_or("/"),
        flags.millis("timeout-ms", 2000)?,
    )?;
    print!("{body}");
    Ok(())
}

/// One GET on a fresh connection; the body of a 200 answer, or why there is none.
fn http_get(to: SocketAddr, host: Option<&str>, path: &str, timeout: Duration) -> Result<String, String> {
    let mut conn = TcpStream::connect_timeout(&to, timeout).map_err(|e| format!("connect {to}: {e}"))?;
    conn.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    conn.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let host = host.map(str::to_string).unwrap_or_else(|| to.to_string());
    let request =
        format!("GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\nuser-agent: cw-netns-probe\r\n\r\n");
    conn.write_all(request.as_bytes()).map_err(|e| format!("write {to}: {e}"))?;
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).map_err(|e| format!("read {to}: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("{to}: no HTTP response head in {text:?}"))?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("{to}: status line {status:?}, body {body:?}"));
    }
    Ok(body.to_string())
}

fn udp_cmd(args: &[String]) -> Result<(), String> {
    let flags = Flags::parse(args)?;
    let to = flags.target()?;
    let timeout = flags.millis("timeout-ms", 2000)?;
    let socket = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    socket.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    socket.send_to(b"ping\n", to).map_err(|e| format!("send {to}: {e}"))?;
    let mut buf = [0u8; 2048];
    let (n, _) = socket.recv_from(&mut buf).map_err(|e| format!("recv from {to}: {e}"))?;
    print!("{}", String::from_utf8_lossy(&buf[..n]));
    Ok(())
}

/// Requests on fresh connections (so every one gets a fresh load-balancing decision) for a while; one line per
/// request: `<start, ms since the Unix epoch> OK <body>` or `<start> ERR <reason>`. Wall-clock times let the
/// harness compare them with the moment it changed something.
fn loop_cmd(args: &[String]) -> Result<(), String> {
    let flags = Flags::parse(args)?;
    let to = flags.target()?;
    let duration = flags.millis("duration-ms", 0)?;
    let interval = flags.millis("interval-ms", 50)?;
    let timeout = flags.millis("timeout-ms", 1000)?;
    let host = flags.one("host");
    let path = flags.one("path").unwrap_or("/");
    let start = Instant::now();
    let mut out = std::io::stdout().lock();
    // Bounded: at most one request per interval for the duration, and never more than 10 000.
    for _ in 0..10_000 {
        let at = start.elapsed();
        if at >= duration {
            break;
        }
        let wall =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
        let line = match http_get(to, host, path, timeout) {
            Ok(body) => format!("{wall} OK {}", body.trim_end()),
            Err(e) => format!("{wall} ERR {}", e.replace('\n', " ")),
        };
        writeln!(out, "{line}").map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())?;
        let next = at + interval;
        let now = start.elapsed();
        if next > now {
            std::thread::sleep(next - now);
        }
    }
    Ok(())
}

fn epoch_ms() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
}

/// Requests on one kept-alive connection (an established flow), one line each as `loop` prints them; stops at
/// the first failure, since the connection is then gone.
fn keepalive_cmd(args: &[String]) -> Result<(), String> {
    let flags = Flags::parse(args)?;
    let to = flags.target()?;
    let count: usize = flags.one("count").unwrap_or("10").parse().map_err(|_| "--count is not a number")?;
    let interval = flags.millis("interval-ms", 50)?;
    let timeout = flags.millis("timeout-ms", 1000)?;
    let mut out = std::io::stdout().lock();
    let conn = TcpStream::connect_timeout(&to, timeout).map_err(|e| format!("connect {to}: {e}"))?;
    conn.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let mut writer = conn.try_clone().map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(conn);
    for _ in 0..count.min(10_000) {
        let at = epoch_ms();
        let result = (|| -> Result<String, String> {
            let request = format!("GET / HTTP/1.1\r\nhost: {to}\r\nuser-agent: cw-netns-probe\r\n\r\n");
            writer.write_all(request.as_bytes()).map_err(|e| format!("write: {e}"))?;
            let mut status = String::new();
            reader.read_line(&mut status).map_err(|e| format!("read: {e}"))?;
            if status.split_whitespace().nth(1) != Some("200") {
                return Err(format!("status line {status:?}"));
            }
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).map_err(|e| format!("read: {e}"))? == 0 {
                    return Err("connection closed in the response head".into());
                }
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                if let Some((k, v)) = line.split_once(':')
                    && k.trim().eq_ignore_ascii_case("content-length")
                {
                    length = v.trim().parse().map_err(|_| format!("bad content-length {v:?}"))?;
                }
            }
            let mut body = vec![0u8; length.min(1 << 20)];
            reader.read_exact(&mut body).map_err(|e| format!("read body: {e}"))?;
            Ok(String::from_utf8_lossy(&body).trim_end().to_string())
        })();
        let failed = result.is_err();
        let line = match result {
            Ok(body) => format!("{at} OK {body}"),
            Err(e) => format!("{at} ERR {e}"),
        };
        writeln!(out, "{line}").map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())?;
        if failed {
            break;
        }
        std::thread::sleep(interval);
    }
    Ok(())
}
