//! Paths of the components built from `functions/`, one constant per package
//! (`ECHO`, `FILTER`, `FIXTURE_TRAP`, ...), plus [`ALL`].

include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));
