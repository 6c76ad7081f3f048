//! The page-server action: `criu page-server`, PAGE_SERVER and
//! PAGE_SERVER_CHLD (CRIU's `cr_page_server` in `criu/page-xfer.c` and
//! `start_page_server_req` in `criu/cr-service.c`).
//!
//! The server binds its listener first (port 0: the kernel picks one), so a
//! sender may connect as soon as the port is reported; it then accepts one
//! connection, or uses the inherited `ps.fd` / `--ps-socket` socket, serves
//! one session of the page-server protocol ([`crate::mem::page_server`])
//! into the images directory, and ends. With `--prev-images-dir` the
//! `parent` link is made and parent questions are answered from it.
//! TLS is refused during options processing.

use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};

use criu_proto::img::ImagesDir;
use nix::unistd::{ForkResult, Pid};

use crate::dump::incremental::{link_parent, IncrementalError};
use crate::mem::page_server::{self, PageServerError, ServeStats};
use crate::opts::RequestOpts;
use crate::pstree::RealPid;

/// The page server could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum PageServerActionError {
    /// No images directory.
    #[error("the page server needs an images directory")]
    NoImagesDir,
    /// The images directory fd could not be duplicated.
    #[error("cannot use the images directory")]
    ImagesDir(#[source] std::io::Error),
    /// The parent link failed.
    #[error(transparent)]
    Parent(#[from] IncrementalError),
    /// The protocol or the listener failed.
    #[error(transparent)]
    Protocol(#[from] PageServerError),
    /// Accepting the connection failed.
    #[error("page server on port {port} cannot accept a connection")]
    Accept {
        /// The port.
        port: u16,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The inherited socket cannot be used.
    #[error("cannot use page server socket fd {fd}")]
    PsSocket {
        /// The descriptor.
        fd: i32,
        /// Why.
        #[source]
        source: crate::inject::InjectError,
    },
    /// Serving a lazy-pages daemon failed.
    #[error(transparent)]
    Lazy(#[from] crate::lazy::LazyError),
    /// Forking the server failed.
    #[error("cannot start the page server process")]
    Fork(#[source] nix::errno::Errno),
}

enum Conn {
    Listener(TcpListener),
    Socket(TcpStream),
}

/// A page server whose listener is bound (or whose socket is inherited).
pub struct Ready {
    conn: Conn,
    port: u16,
    dir: ImagesDir,
    parent: Option<ImagesDir>,
    status_fd: Option<OwnedFd>,
    lazy: bool,
}

/// Binds the listener of the page server `opts` asks for.
pub fn prepare(opts: &RequestOpts) -> Result<Ready, PageServerActionError> {
    let images = opts
        .images_dir
        .as_ref()
        .ok_or(PageServerActionError::NoImagesDir)?;
    let dir = ImagesDir::from_fd(
        images
            .fd
            .try_clone()
            .map_err(PageServerActionError::ImagesDir)?,
        images.path.clone(),
    );
    let parent = link_parent(&dir, opts.parent_img.as_deref())?;
    let (conn, port) = match opts.ps_socket {
        Some(fd) => {
            let me = RealPid(std::process::id() as i32);
            let sk = crate::inject::steal_fd(me, fd)
                .map_err(|source| PageServerActionError::PsSocket { fd, source })?;
            (Conn::Socket(TcpStream::from(sk)), opts.port)
        }
        None => {
            let (l, port) = page_server::listen(opts.address.as_deref(), opts.port)?;
            (Conn::Listener(l), port)
        }
    };
    tracing::info!(port, "page server listening");
    let status_fd = match &opts.status_fd {
        Some(fd) => fd.try_clone().ok(),
        None => None,
    };
    Ok(Ready {
        conn,
        port,
        dir,
        parent,
        status_fd,
        lazy: opts.lazy_pages,
    })
}

impl Ready {
    /// The port senders connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Signals readiness on `status_fd`, accepts one sender and serves it
    /// (with `--lazy-pages`: one lazy-pages daemon, from the images).
    pub fn serve(self) -> Result<ServeStats, PageServerActionError> {
        if let Some(fd) = self.status_fd {
            let _ = nix::unistd::write(fd.as_fd(), &[0u8]);
        }
        let sk = match self.conn {
            Conn::Socket(s) => s,
            Conn::Listener(l) => {
                l.accept()
                    .map_err(|source| PageServerActionError::Accept {
                        port: self.port,
                        source,
                    })?
                    .0
            }
        };
        if self.lazy {
            let lazy = crate::lazy::serve_lazy(sk, &self.dir)?;
            tracing::info!(
                pages = lazy.pages,
                requests = lazy.requests,
                "lazy page server session over"
            );
            return Ok(ServeStats {
                pages: lazy.pages,
                ..ServeStats::default()
            });
        }
        let stats = page_server::serve(sk, &self.dir, self.parent.as_ref())?;
        tracing::info!(pages = stats.pages, "page server session over");
        Ok(stats)
    }

    /// Runs the server in a child process (PAGE_SERVER_CHLD, `criu
    /// page-server -d`): returns its pid; the child exits when the
    /// session ends. With `daemon`, the server is a daemon instead: in
    /// its own session, not a child of the caller, stdio on `/dev/null`.
    pub fn spawn(self, daemon: bool) -> Result<Pid, PageServerActionError> {
        let (rd, wr) = nix::unistd::pipe().map_err(PageServerActionError::Fork)?;
        match crate::sys::fork::fork_single_threaded().map_err(PageServerActionError::Fork)? {
            ForkResult::Parent { child } => {
                drop(wr);
                if !daemon {
                    return Ok(child);
                }
                let mut pid = [0u8; 4];
                let got = nix::unistd::read(rd.as_fd(), &mut pid);
                let _ = nix::sys::wait::waitpid(child, None);
                match got {
                    Ok(4) => Ok(Pid::from_raw(i32::from_ne_bytes(pid))),
                    _ => Err(PageServerActionError::Fork(nix::errno::Errno::ECHILD)),
                }
            }
            ForkResult::Child => {
                drop(rd);
                if daemon {
                    let _ = nix::unistd::setsid();
                    match crate::sys::fork::fork_single_threaded() {
                        Ok(ForkResult::Parent { child }) => {
                            let _ = nix::unistd::write(wr.as_fd(), &child.as_raw().to_ne_bytes());
                            std::process::exit(0);
                        }
                        Ok(ForkResult::Child) => to_dev_null(),
                        Err(_) => std::process::exit(1),
                    }
                }
                drop(wr);
                let code = match self.serve() {
                    Ok(_) => 0,
                    Err(e) => {
                        tracing::error!("{}", crate::worker::error_chain(&e));
                        1
                    }
                };
                std::process::exit(code)
            }
        }
    }
}

fn to_dev_null() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..3 {
            let _ = crate::sys::clone3::dup_to(std::os::fd::AsRawFd::as_raw_fd(&null), fd, false);
        }
    }
}
