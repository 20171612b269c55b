#![no_std]
// Present so cargo accepts this crate as a build-dependency of tcpguard;
// the program itself is the `tcpguard` binary target.
