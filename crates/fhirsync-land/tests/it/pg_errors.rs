//! PostgreSQL connection errors as the user sees them, against a minimal fake server that
//! speaks the start of the wire protocol (the local test server trusts every login, so it
//! cannot refuse a password).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

use fhirsync_land::{DestinationConfig, PostgresConfig};

/// What the fake server does after the startup message.
#[derive(Clone, Copy)]
enum Answer {
    /// Asks for a cleartext password, then refuses it as PostgreSQL does (SQLSTATE 28P01).
    RefusePassword,
}

fn read_exact(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    s.read_exact(&mut buf).expect("client writes");
    buf
}

fn int32(bytes: &[u8]) -> usize {
    u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize
}

/// Serves one connection on a free port; returns the port.
fn fake_server(answer: Answer) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let Ok((mut s, _)) = listener.accept() else { return };
        // Startup message (an SSLRequest first is declined with `N`).
        loop {
            let len = int32(&read_exact(&mut s, 4));
            let body = read_exact(&mut s, len - 4);
            if int32(&body) == 80_877_103 {
                s.write_all(b"N").unwrap();
                continue;
            }
            break;
        }
        match answer {
            Answer::RefusePassword => {
                s.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 3]).unwrap();
                // The password message, if the client has one to send.
                let mut head = [0u8; 5];
                if s.read_exact(&mut head).is_err() {
                    return;
                }
                let _ = read_exact(&mut s, int32(&head[1..]) - 4);
                let mut fields = Vec::new();
                for (code, value) in [
                    (b'S', "FATAL"),
                    (b'V', "FATAL"),
                    (b'C', "28P01"),
                    (b'M', "password authentication failed for user \"alice\""),
                ] {
                    fields.push(code);
                    fields.extend_from_slice(value.as_bytes());
                    fields.push(0);
                }
                fields.push(0);
                let mut msg = vec![b'E'];
                msg.extend_from_slice(&((fields.len() + 4) as u32).to_be_bytes());
                msg.extend_from_slice(&fields);
                s.write_all(&msg).unwrap();
                let _ = s.flush();
            }
        }
    });
    port
}

fn config(port: u16, password_env: &str) -> DestinationConfig {
    let mut c =
        PostgresConfig::new(format!("host=127.0.0.1 port={port} user=alice dbname=x sslmode=disable"));
    c.password_env = password_env.to_string();
    DestinationConfig::Postgres(c)
}

fn open_error(config: &DestinationConfig) -> String {
    match fhirsync_land::open(config) {
        Ok(_) => panic!("the fake server lets nobody in"),
        Err(e) => e.to_string(),
    }
}

/// A refused password shows PostgreSQL's own message, not "db error".
#[test]
fn wrong_password_shows_the_server_message() {
    let port = fake_server(Answer::RefusePassword);
    // Any variable that is set works as "a password was given"; cargo sets this one for tests.
    let e = open_error(&config(port, "CARGO_PKG_NAME"));
    assert!(e.contains("password authentication failed for user \"alice\""), "{e}");
    assert!(e.contains("28P01") && !e.contains("db error"), "{e}");
}

/// A server asking for a password while the password variable is unset names that variable.
#[test]
fn missing_password_variable_is_named() {
    let port = fake_server(Answer::RefusePassword);
    let e = open_error(&config(port, "FHIRSYNC_TEST_UNSET_PASSWORD_VARIABLE"));
    assert!(e.contains("FHIRSYNC_TEST_UNSET_PASSWORD_VARIABLE") && e.contains("`alice`"), "{e}");
    assert!(!e.contains("invalid configuration"), "{e}");
}

/// A refused connection carries the OS error, not only "error connecting to server".
#[test]
fn refused_connection_shows_the_os_error() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let e = open_error(&config(port, "FHIRSYNC_TEST_UNSET_PASSWORD_VARIABLE"));
    assert!(e.to_lowercase().contains("refused"), "{e}");
}

/// An inline password in the url is refused before connecting, without echoing it.
#[test]
fn inline_password_is_refused() {
    let c = DestinationConfig::Postgres(PostgresConfig::new("postgresql://alice:hunter2@127.0.0.1:1/x"));
    let e = open_error(&c);
    assert!(e.contains("password_env") && !e.contains("hunter2"), "{e}");
}
