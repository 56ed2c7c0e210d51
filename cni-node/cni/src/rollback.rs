//! Undo steps of a half-done ADD.

/// A stack of undo actions, run in reverse order on drop unless [`Rollback::disarm`] was called.
#[derive(Default)]
pub struct Rollback(Vec<Box<dyn FnOnce()>>);

impl Rollback {
    /// Register an undo action.
    pub fn push(&mut self, undo: impl FnOnce() + 'static) {
        self.0.push(Box::new(undo));
    }

    /// The operation succeeded: forget every undo action.
    pub fn disarm(mut self) {
        self.0.clear();
    }
}

impl Drop for Rollback {
    fn drop(&mut self) {
        while let Some(undo) = self.0.pop() {
            undo();
        }
    }
}

impl std::fmt::Debug for Rollback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Rollback({} steps)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    #[test]
    fn runs_in_reverse_unless_disarmed() {
        let log = Rc::new(RefCell::new(Vec::new()));
        {
            let mut rb = Rollback::default();
            for i in 0..3 {
                let log = log.clone();
                rb.push(move || log.borrow_mut().push(i));
            }
        }
        assert_eq!(*log.borrow(), vec![2, 1, 0]);
        let mut rb = Rollback::default();
        let l2 = log.clone();
        rb.push(move || l2.borrow_mut().push(9));
        rb.disarm();
        assert_eq!(log.borrow().len(), 3);
    }
}
