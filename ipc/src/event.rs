//! What a gateway tells its operator (the gateway's and a link's turn's reports).

/// What a gateway tells its operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The link to `worker` is up.
    Up { worker: String, via: String },
    /// A service was refused: the worker offered it outside its grant, or it was not
    /// announced to the worker.
    Refused {
        worker: String,
        service: String,
        why: String,
    },
    /// A sample or a notification could not be relayed (the link goes on).
    Error { worker: String, what: String },
    /// The link to `worker` ended with this error (the others go on).
    Failed { worker: String, error: String },
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::Up { worker, via } => write!(f, "{worker}: link up over {via}"),
            Event::Refused {
                worker,
                service,
                why,
            } => write!(f, "{worker}: refused service {service:?}: {why}"),
            Event::Error { worker, what } => write!(f, "{worker}: {what}"),
            Event::Failed { worker, error } => write!(f, "{worker}: link ended: {error}"),
        }
    }
}
