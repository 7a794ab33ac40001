// The Kubernetes manifests in deploy/kubernetes/ are valid against Kubernetes' own schema (v1.31, strict: no field
// the API does not know), read as kubectl reads them, and give the pod what a capture needs on its node.
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { Ajv } from 'ajv/dist/ajv.js'
import addFormatsModule from 'ajv-formats'
import { parseAllDocuments } from 'yaml'
import { describe, expect, it } from 'vitest'
import { repoRoot } from '../helpers/paths.js'

const manifestsDir = join(repoRoot, 'deploy/kubernetes')
const schemaDir = join(repoRoot, 'test/fixtures/kubernetes-schema')

// Kind and apiVersion of each object the manifests may hold, and its schema file.
const schemaFiles: Record<string, string> = {
  'apps/v1 DaemonSet': 'daemonset-apps-v1.json',
  'batch/v1 Job': 'job-batch-v1.json',
}

type Validate = ((data: unknown) => boolean) & { errors?: { instancePath: string; message?: string }[] | null }

function validatorFor(file: string): Validate {
  const schema = JSON.parse(readFileSync(join(schemaDir, file), 'utf8')) as Record<string, unknown>
  // The generated schemas name a meta-schema ajv does not ship ("http://json-schema.org/schema#"); they are draft-07
  // in what they use. strict off for the x-kubernetes-* annotations; the int32 and int64 formats are Kubernetes'
  // names for integer sizes, which the type already checks.
  delete schema.$schema
  const ajv = new Ajv({ strict: false, allErrors: true, formats: { int32: true, int64: true } })
  const addFormats = ((addFormatsModule as unknown as { default?: unknown }).default ?? addFormatsModule) as (a: unknown) => void
  addFormats(ajv)
  return ajv.compile(schema) as Validate
}

const validators = new Map<string, Validate>()
/** The problems Kubernetes' schema finds in one object, each as "path: message"; empty when it is valid. */
function problemsOf(object: { apiVersion?: unknown; kind?: unknown }): string[] {
  const key = `${String(object.apiVersion)} ${String(object.kind)}`
  const file = schemaFiles[key]
  if (!file) return [`no schema for ${key}`]
  if (!validators.has(file)) validators.set(file, validatorFor(file))
  const validate = validators.get(file)!
  if (validate(object)) return []
  return (validate.errors ?? []).map((e) => `${e.instancePath || '/'}: ${e.message ?? 'invalid'}`)
}

interface Manifest {
  file: string
  object: Record<string, any>
}

function readManifests(): Manifest[] {
  const out: Manifest[] = []
  for (const file of readdirSync(manifestsDir).filter((f) => /\.ya?ml$/.test(f)).sort()) {
    for (const doc of parseAllDocuments(readFileSync(join(manifestsDir, file), 'utf8'))) {
      if (Array.isArray(doc)) throw new Error(`${file}: not YAML`)
      expect(doc.errors, `${file} parses`).toEqual([])
      const object = doc.toJS() as Record<string, any> | null
      if (object !== null) out.push({ file, object })
    }
  }
  return out
}

const manifests = readManifests()
const ofKind = (kind: string) => manifests.filter((m) => m.object.kind === kind)

describe('Kubernetes manifests', () => {
  it('are a DaemonSet and a Job, each valid against Kubernetes v1.31 schema', () => {
    expect(manifests.map((m) => m.object.kind).sort()).toEqual(['DaemonSet', 'Job'])
    for (const { file, object } of manifests) expect(problemsOf(object), `${file}: ${object.kind}`).toEqual([])
  })

  it('give the pod the node\'s processes, privileges, /proc, /run and a bundle directory on the node', () => {
    for (const { file, object } of manifests) {
      const pod = object.spec.template.spec
      const [container] = pod.containers
      expect(pod.hostPID, file).toBe(true)
      expect(container.securityContext.privileged, file).toBe(true)
      const hostPathOf = (mountPath: string) => {
        const mount = container.volumeMounts.find((m: { mountPath: string }) => m.mountPath === mountPath)
        return pod.volumes.find((v: { name: string }) => v.name === mount?.name)?.hostPath?.path
      }
      expect(hostPathOf('/host/proc'), file).toBe('/proc')
      expect(hostPathOf('/run'), file).toBe('/run')
      expect(hostPathOf('/var/lib/procsnap/bundles'), file).toBe('/var/lib/procsnap/bundles')
      expect(container.workingDir, file).toBe('/var/lib/procsnap/bundles')
    }
  })

  it('the Job captures one named process on one node, once', () => {
    const [job] = ofKind('Job')
    const pod = job!.object.spec.template.spec
    expect(pod.nodeName).toBeTypeOf('string')
    expect(pod.restartPolicy).toBe('Never')
    expect(job!.object.spec.backoffLimit).toBe(0)
    expect(pod.containers[0].command).toEqual(['procsnap'])
    expect(pod.containers[0].args.slice(0, 2)).toEqual(['dump', '--name'])
  })

  it('a manifest with a field of the wrong type is refused, and so is a field Kubernetes does not know', () => {
    const [daemonSet] = ofKind('DaemonSet')
    const wrongType = structuredClone(daemonSet!.object)
    wrongType.spec.template.spec.hostPID = 'yes'
    expect(problemsOf(wrongType)).toContain('/spec/template/spec/hostPID: must be boolean,null')
    const wrongMount = structuredClone(daemonSet!.object)
    wrongMount.spec.template.spec.containers[0].volumeMounts[0].readOnly = 'true'
    expect(problemsOf(wrongMount).join('\n')).toMatch(/volumeMounts\/0\/readOnly: must be boolean/)
    const unknown = structuredClone(daemonSet!.object)
    unknown.spec.template.spec.hostPid = true
    expect(problemsOf(unknown).join('\n')).toMatch(/must NOT have additional properties/)
    const [job] = ofKind('Job')
    const wrongKind = structuredClone(job!.object)
    wrongKind.spec.backoffLimit = '0'
    expect(problemsOf(wrongKind).join('\n')).toMatch(/\/spec\/backoffLimit: must be integer/)
  })
})
