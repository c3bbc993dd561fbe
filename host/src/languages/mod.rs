//! Functions in Python and JavaScript: the toolchains that make them
//! components, the WIT world each is built against, and the plug that takes
//! `wasi:sockets` out of a Python component. `brink build` and the tests'
//! artifacts both build through here.

pub mod js;
mod plug;
pub mod python;
pub mod toolchain;
pub mod world;
