# lp_add_layer(NAME DEPS...): a library lp_NAME from every .cpp under src/NAME (recursively).
# Globbing keeps CMakeLists free of per-file edits; CONFIGURE_DEPENDS re-globs when files appear.
# A layer with no sources yet (headers only) becomes an INTERFACE library.
function(lp_add_layer name)
  file(GLOB_RECURSE srcs CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/src/${name}/*.cpp)
  if(srcs)
    add_library(lp_${name} STATIC ${srcs})
    target_include_directories(lp_${name} PUBLIC ${PROJECT_SOURCE_DIR}/src)
    target_link_libraries(lp_${name} PUBLIC ${ARGN})
  else()
    add_library(lp_${name} INTERFACE)
    target_include_directories(lp_${name} INTERFACE ${PROJECT_SOURCE_DIR}/src)
    target_link_libraries(lp_${name} INTERFACE ${ARGN})
  endif()
endfunction()

# lp_unity(TARGET): compile TARGET's sources in unity batches of 8. Most units of a layer parse and instantiate
# the same heavy headers (nlohmann/json, fmt, CLI11, Boost), which a batch does once; on a 2-core CI machine
# that was a large part of three full builds. In a batch the .cpp files are "included", so GCC would flag a
# class of one file holding a type of its own anonymous namespace, which is fine in a .cpp
# (-Wno-subobject-linkage). Names in a layer's anonymous namespaces must differ across its files.
function(lp_unity target)
  set_target_properties(${target} PROPERTIES UNITY_BUILD ON UNITY_BUILD_BATCH_SIZE 8)
  target_compile_options(${target} PRIVATE -Wno-subobject-linkage)
endfunction()
