/**
 * Typed errors for input a user can fix. Tasks print their message alone,
 * without a stack trace, and exit with status 1.
 *
 * @module
 */

/** An error about user input: a file, a record, a flag or a config key. */
export class InputError extends Error {
  /** The file the error is about, when there is one. */
  file?: string;
  /** The line, record or entry within the file. */
  where?: string;
  constructor(message: string, options: { file?: string; where?: string; cause?: unknown } = {}) {
    const prefix = options.file ? `${options.file}${options.where ? ` (${options.where})` : ""}: ` : "";
    super(prefix + message, { cause: options.cause });
    this.name = "InputError";
    this.file = options.file;
    this.where = options.where;
  }
}

/** A configuration error that names the offending key. */
export class ConfigError extends InputError {
  constructor(message: string, options: { file?: string; key?: string; cause?: unknown } = {}) {
    super(options.key ? `key "${options.key}": ${message}` : message, { file: options.file, cause: options.cause });
    this.name = "ConfigError";
  }
}
