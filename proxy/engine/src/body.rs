//! Body types: the request body sent upstream (with the size limit) and the response body sent to clients
//! (an upstream body that returns its connection to the pool when it ends, or a small body of our own).

use crate::upstream::{EndpointPool, UpstreamSender};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Why a request body could not be forwarded.
#[derive(Debug)]
pub(crate) enum UpBodyError {
    /// The body grew past [`crate::Limits::max_request_body_bytes`].
    TooLarge,
    /// The client's stream failed.
    Client(hyper::Error),
}

impl fmt::Display for UpBodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpBodyError::TooLarge => f.write_str("request body larger than the limit"),
            UpBodyError::Client(e) => write!(f, "client body: {e}"),
        }
    }
}

impl std::error::Error for UpBodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UpBodyError::TooLarge => None,
            UpBodyError::Client(e) => Some(e),
        }
    }
}

/// A client's request body on its way upstream, cut off past the size limit.
pub(crate) struct UpBody {
    /// `None`: an empty body (a replayed request).
    inner: Option<Incoming>,
    remaining: Option<u64>,
}

impl UpBody {
    pub fn new(inner: Incoming, limit: Option<u64>) -> Self {
        Self { inner: Some(inner), remaining: limit }
    }

    /// No body at all.
    pub fn empty() -> Self {
        Self { inner: None, remaining: None }
    }
}

impl Body for UpBody {
    type Data = Bytes;
    type Error = UpBodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, UpBodyError>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else { return Poll::Ready(None) };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(remaining), Some(data)) = (this.remaining.as_mut(), frame.data_ref()) {
                    let len = data.len() as u64;
                    if len > *remaining {
                        return Poll::Ready(Some(Err(UpBodyError::TooLarge)));
                    }
                    *remaining -= len;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(UpBodyError::Client(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
    }
}

/// An upstream response body. When it ends cleanly its connection goes back to the endpoint's pool; when it
/// is dropped early (client gone) the connection is closed, because it may still carry unread bytes.
pub(crate) struct PooledBody {
    inner: Incoming,
    give_back: Option<(UpstreamSender, Arc<EndpointPool>)>,
}

impl PooledBody {
    pub fn new(inner: Incoming, sender: UpstreamSender, pool: Arc<EndpointPool>) -> Self {
        let mut body = Self { inner, give_back: Some((sender, pool)) };
        // An empty body (204, 304, HEAD, Content-Length: 0) may never be polled.
        if body.inner.is_end_stream() {
            body.release();
        }
        body
    }

    fn release(&mut self) {
        if let Some((sender, pool)) = self.give_back.take() {
            pool.checkin(sender);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.release(),
            Poll::Ready(Some(Err(_))) => this.give_back = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What the proxy answers with.
pub(crate) enum ProxyBody {
    /// A body the proxy wrote itself (errors, redirects, admin pages).
    Full(Option<Bytes>),
    /// A body streamed from an endpoint.
    Upstream(PooledBody),
}

impl ProxyBody {
    /// A body of our own.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let b = bytes.into();
        if b.is_empty() { ProxyBody::Full(None) } else { ProxyBody::Full(Some(b)) }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Upstream(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(b) => b.is_none(),
            ProxyBody::Upstream(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ProxyBody::Upstream(b) => b.size_hint(),
        }
    }
}
