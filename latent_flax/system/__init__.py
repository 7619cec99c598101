"""Process plumbing every layer may use: flags and exit codes, config checks, devices and
their mesh, multi-process start-up, huge pages, atomic files. Imports nothing else of the
package."""
