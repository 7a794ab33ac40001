// Validates a manifest against the versioned JSON Schema shipped in manifests/.

import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { Ajv2020 } from 'ajv/dist/2020.js'
import addFormatsModule from 'ajv-formats'
import { MANIFEST_SCHEMA_VERSION, OLDEST_READ_SCHEMA_VERSION } from './manifest.js'

export const schemaPath = (version: number = MANIFEST_SCHEMA_VERSION): string =>
  fileURLToPath(new URL(`../../manifests/manifest-v${version}.schema.json`, import.meta.url))

type Validate = ((data: unknown) => boolean) & { errors?: { instancePath: string; message?: string }[] | null }
const validators = new Map<number, Validate>()

function compile(version: number): Validate {
  // allErrors off: the first problem is enough to refuse, and collecting every one of a hostile manifest's millions of
  // errors ran snap out of memory.
  const ajv = new Ajv2020({ allErrors: false, strict: true })
  // ajv-formats is CommonJS; its default export arrives wrapped under ESM.
  const addFormats = ((addFormatsModule as unknown as { default?: unknown }).default ?? addFormatsModule) as (a: unknown) => void
  addFormats(ajv)
  return ajv.compile(JSON.parse(readFileSync(schemaPath(version), 'utf8'))) as Validate
}

/** Returns the list of problems (empty when valid), each as "path: message". A manifest is checked against the schema
 *  of the version it declares (older bundles keep reading); an unknown version is checked against the newest. */
export function validateManifest(data: unknown): string[] {
  const declared = (data as { schemaVersion?: unknown } | null)?.schemaVersion
  const version = typeof declared === 'number' && Number.isInteger(declared) && declared >= OLDEST_READ_SCHEMA_VERSION && declared <= MANIFEST_SCHEMA_VERSION ? declared : MANIFEST_SCHEMA_VERSION
  let validator = validators.get(version)
  if (!validator) validators.set(version, (validator = compile(version)))
  if (validator(data)) return []
  return (validator.errors ?? []).map((e) => `${e.instancePath || '/'}: ${e.message ?? 'invalid'}`)
}
