// moved to src/criu-images/pstree.ts
export * from '../criu-images/pstree.js'
