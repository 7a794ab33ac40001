#!/usr/bin/env node
// Runs the built CLI (dist/). `npm run setup` builds it.
import { execute } from '@oclif/core'

await execute({ dir: import.meta.url })
