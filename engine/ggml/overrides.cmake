# Included by llama.cpp's CMake build after each project() call (CMAKE_PROJECT_INCLUDE, set in
# .cargo/config.toml and passed on by llama-cpp-sys-2's build script). It swaps in genq's decode
# attention kernel and Q8_0 matrix kernel without carrying a copy of llama.cpp: ggml's own
# functions are renamed where they are defined (ops.cpp, llamafile/sgemm.cpp), and genq's files,
# added to the CPU backend, take their names and call them for every case they do not handle.
# llama-cpp-sys-2 configures a build directory only once: one configured before this hook (or
# before a source was added here) needs `cargo clean -p llama-cpp-sys-2`.

if(NOT PROJECT_NAME STREQUAL "llama.cpp")
    return()
endif()
if(CMAKE_VERSION VERSION_LESS 3.19)
    message(FATAL_ERROR "genq's kernels need CMake 3.19 or newer, not ${CMAKE_VERSION}")
endif()

# GGML_GENQ_OVERRIDES=off (with genq-engine's `upstream-kernels` feature) builds llama.cpp as it
# ships: no kernel added, nothing renamed.
if(GGML_GENQ_OVERRIDES STREQUAL "off")
    message(STATUS "genq: GGML_GENQ_OVERRIDES=off, llama.cpp's own kernels only")
    set(GENQ_KERNELS OFF)
else()
    set(GENQ_KERNELS ON)
endif()

# The llama.cpp sources genq's kernels were read against: the operators they replace and call
# (ops.*, vec.*, llamafile/sgemm.*), how ggml calls them and lays out their tensors, parameters
# and thread shares (ggml-cpu.c, ggml-cpu-impl.h, common.h, ggml.c, ggml.h, ggml-common.h). A new llama.cpp can change any of these without
# breaking the build (a flash-attention parameter added to op_params, a new case routed through
# llamafile_sgemm) and the kernels would then compute something else. After reading the changes
# against engine/ggml/ and running the kernel tests, record the new digests here
# (`sha256sum` of each file under llama-cpp-sys-2's llama.cpp/).
set(GENQ_CHECKED_SOURCES
    ggml/include/ggml.h 12ee71f99db7db9b353bc02b1fbb57c344ee17c01ac5fb7952b41a637a747ea9
    ggml/src/ggml.c 7e8bf2b60598b50d718f46aa3c36c9293b10f4e7dfde6844f0693e6fc976d505
    ggml/src/ggml-common.h 0061131b615c5721fc88a78feeb22c1f8c450f1c2646a317d80796a653bf595c
    ggml/src/ggml-cpu/ggml-cpu.c 45b22f8c83b2cbccabfc2f81a38ef8a5810223e1ce366b7c6f77d42faa5cc6f3
    ggml/src/ggml-cpu/ops.cpp 215d16e7ebbb4066920e2d7a5f7ea6c46636d298aedd553e00f0b3ebb0d59305
    ggml/src/ggml-cpu/ops.h 2727d0414c23f1d06ade33d277c3ca1f0726c7902642c0e36d839c20781b1694
    ggml/src/ggml-cpu/vec.cpp 31e43ec66a1e2920a549dd2f71e6ce474e68f2fc298c4d2942404ca327e763d1
    ggml/src/ggml-cpu/vec.h 885a50e405f20f75ea70cb7fb062934812beffc9229ddb56a003aa150163d2fa
    ggml/src/ggml-cpu/ggml-cpu-impl.h 785a19aac84bd35671d34b1986b920baadccdf61cd8b81e787028f6ac24cae60
    ggml/src/ggml-cpu/common.h db7c19747a28c819d18922aa43b91b224df3730e424e6d8a4cf4fd16bfb1db14
    ggml/src/ggml-cpu/llamafile/sgemm.cpp 8413c9a0828ddea7289aee72a32c03bd56a23ee40179ec3600f9b0589a21e338
    ggml/src/ggml-cpu/llamafile/sgemm.h 6ec12aa9244a8ffb13ae56b2e391f905b1d152ae25ff45da6a66e18daf650b3b
)

function(genq_check_sources)
    set(changed "")
    set(entries ${GENQ_CHECKED_SOURCES})
    while(entries)
        list(POP_FRONT entries file expected)
        set(path "${CMAKE_SOURCE_DIR}/${file}")
        if(EXISTS "${path}")
            file(SHA256 "${path}" actual)
        else()
            set(actual "missing")
        endif()
        if(NOT actual STREQUAL expected)
            string(APPEND changed "\n  ${file}: ${actual}, checked: ${expected}")
        endif()
    endwhile()
    if(changed)
        message(FATAL_ERROR "genq: this llama.cpp (${CMAKE_SOURCE_DIR}) differs from the one "
            "genq's kernels in engine/ggml/ were checked against:${changed}\n"
            "Read the changes against the kernels, record the new digests in "
            "GENQ_CHECKED_SOURCES (engine/ggml/overrides.cmake), run `cargo test --release -p "
            "genq-engine --test kernels`, and keep the digests only if it passes. Or build "
            "without genq's kernels: "
            "GGML_GENQ_OVERRIDES=off and genq-engine's `upstream-kernels` feature "
            "(docs/performance.md, \"Upgrading llama.cpp\").")
    endif()
endfunction()

# Compiles the one ggml-cpu source matching source_regex with `definition` (old=new), so that the
# function it defines is renamed there and genq's file can take the old name.
function(genq_rename_in_source source_regex definition why_missing)
    get_target_property(cpu_sources ggml-cpu SOURCES)
    list(FILTER cpu_sources INCLUDE REGEX "${source_regex}")
    list(LENGTH cpu_sources found)
    if(NOT found EQUAL 1)
        message(FATAL_ERROR "genq: expected one source matching ${source_regex} in ggml-cpu, "
            "found ${found}${why_missing}")
    endif()
    get_target_property(cpu_dir ggml-cpu SOURCE_DIR)
    get_filename_component(source "${cpu_sources}" ABSOLUTE BASE_DIR "${cpu_dir}")
    set_property(SOURCE "${source}" TARGET_DIRECTORY ggml-cpu APPEND PROPERTY
        COMPILE_DEFINITIONS ${definition})
endfunction()

function(genq_apply_ggml_overrides)
    # With GGML_BACKEND_DL the CPU backend is a module loaded at run time, where genq-engine
    # cannot reach genq_set_upstream_attention or genq_set_upstream_matmul.
    if(NOT TARGET ggml-cpu)
        message(FATAL_ERROR "genq's kernels need ggml's CPU backend linked in "
            "(a ggml-cpu target; GGML_BACKEND_DL builds have none)")
    endif()
    genq_rename_in_source("ggml-cpu/ops\\.cpp$"
        ggml_compute_forward_flash_attn_ext=ggml_compute_forward_flash_attn_ext_upstream "")
    genq_rename_in_source("ggml-cpu/llamafile/sgemm\\.cpp$"
        llamafile_sgemm=llamafile_sgemm_upstream
        " (GGML_LLAMAFILE=OFF builds have none, and genq's matrix kernel needs its entry point)")
    target_sources(ggml-cpu PRIVATE
        ${GENQ_GGML_DIR}/flash_attn_decode.cpp ${GENQ_GGML_DIR}/q8_0_matmul.cpp)
    message(STATUS "genq: decode attention and Q8_0 matrix kernels added to ggml-cpu")
endfunction()

# llama-cpp-2 always has llama-cpp-sys-2 build llama.cpp's `common` library (argument parsing,
# chat templates, model downloads over the vendored cpp-httplib) and link it, though genq calls
# none of it: every function genq runs is in llama and ggml. Their 54 sources took 221 s to
# compile on 2 cores at -O3 and take 143 s unoptimized (AMD EPYC, 2026-12-07). A later -O wins
# over CMAKE_CXX_FLAGS_RELEASE's -O3.
function(genq_compile_unused_libraries_unoptimized)
    foreach(target llama-common cpp-httplib)
        if(TARGET ${target})
            target_compile_options(${target} PRIVATE -O0)
        else()
            # Renamed upstream, or no longer built: the build still works, only slower.
            message(WARNING "genq: no ${target} target in llama.cpp to compile unoptimized")
        endif()
    endforeach()
endfunction()

set(GENQ_GGML_DIR ${CMAKE_CURRENT_LIST_DIR})
if(GENQ_KERNELS)
    genq_check_sources()
    cmake_language(DEFER DIRECTORY ${CMAKE_SOURCE_DIR} CALL genq_apply_ggml_overrides)
endif()
cmake_language(DEFER DIRECTORY ${CMAKE_SOURCE_DIR} CALL genq_compile_unused_libraries_unoptimized)
