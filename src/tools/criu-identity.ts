// moved to src/criu-images/identity.ts
export * from '../criu-images/identity.js'
