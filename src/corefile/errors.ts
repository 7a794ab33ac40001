// The one failure writeCoreFromImages reports: the images could not be turned into a core (a missing or
// undecodable image, an unsupported task, an I/O error). It is a step failure: the target was already released.

import { StepFailedError } from '../errors.js'

export class CoreBuildError extends StepFailedError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(`building a core from CRIU images failed: ${message}`, 'the CRIU images are untouched: `crit decode -i FILE` shows what each holds', options)
  }
}
